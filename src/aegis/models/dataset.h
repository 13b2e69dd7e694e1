// Data sets for the attacks: N samples of one shape, as floats in the space the attack perturbs
// (pixels scaled to [0, 1] for images), with integer class labels; and a PNG grid that shows
// originals, perturbations and adversarial examples side by side.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace aegis::models {

// Where Debian's dataset-fashion-mnist package puts the files.
inline constexpr const char* kFashionMnistDir = "/usr/share/datasets/fashion-mnist";

struct Dataset {
  std::vector<std::int64_t> sample_shape;  // one sample, e.g. {1, 28, 28} (images are CHW)
  std::vector<float> x;                    // size() * sample_size() values, samples back to back
  std::vector<int> y;                      // class index of each sample
  std::vector<std::string> class_names;    // index -> name where the source names its classes, else empty
  std::string description;                 // what was read, from where, how it was scaled, which classes
  bool is_image = false;                   // read from images (IDX image files, image folders), or samples of {C, H, W} with C of 1 or 3

  std::size_t size() const { return y.size(); }
  std::size_t sample_size() const;
  std::span<const float> sample(std::size_t i) const { return std::span<const float>(x).subspan(i * sample_size(), sample_size()); }
};

struct DataOptions {
  std::string split = "test";  // IDX folders: "test" (t10k-*) or "train"; image folders with train/ and test/ (or val/) subfolders
  std::size_t limit = 0;       // samples to keep, 0 = all
  std::size_t offset = 0;      // samples to skip first
  float scale = 0;             // multiply raw values by this; 0 = 1/255 for 8-bit data (IDX u8, .npy u1, images), 1 otherwise
  std::string labels_path;     // labels for an IDX or .npy input: IDX (.gz) or .npy of class indices (or one-hot rows)
  std::string label_column;    // CSV: the label column's header name or 0-based index; empty = the last column
  char csv_delimiter = 0;      // CSV: 0 = tab for .tsv files, ',' otherwise
  std::optional<std::vector<std::int64_t>> shape;  // reshape each sample (same number of values), e.g. {1, 28, 28} for flat rows
  std::string image_mode = "auto";  // image folders: "gray", "rgb", or "auto" (the first image decides)
  std::uint64_t max_values = 1ull << 28;  // refuse to hold more floats than this (1 GiB)
};

// Loads a data set, choosing the reader by what the path is:
//  - a folder with {t10k,train}-images-idx3-ubyte[.gz] and the matching labels-idx1 files
//    (MNIST, Fashion-MNIST: kFashionMnistDir): split "test" reads t10k-*, "train" reads train-*;
//    samples {1, 28, 28} scaled to [0, 1];
//  - an IDX images file (plain or .gz), labels from labels_path or from the sibling file whose
//    name has labels-idx1 where this one has images-idx3;
//  - a .npy of inputs (first axis = samples) with labels_path; a .npz holding inputs as x, X,
//    arr_0, images, inputs, data or features and labels as y, Y, arr_1, labels, targets or label;
//  - a folder of class subfolders (ImageNet style; sorted folder names are classes 0..K-1) of PNG
//    or JPEG files, all of one size, decoded with OpenCV (EXIF orientation ignored, as PIL
//    ignores it) to CHW gray or RGB scaled to [0, 1]. Samples are ordered by taking the classes in
//    turn (first file of each class, then the second of each...), so a limit keeps classes balanced;
//  - a .csv or .tsv table: numeric feature columns and one label column (integers as they are,
//    anything else mapped to sorted class names); the header row is detected.
// offset and limit select samples after that ordering. Throws core::Error saying what failed and
// what to do, for missing files, malformed bytes (with the byte offset), mismatched counts,
// non-finite values, labels that are not class indices, or data beyond max_values.
Dataset load_dataset(const std::string& path, const DataOptions& options = {});

// Writes a PNG grid: one row per sample, one column per entry of `columns`, each entry holding
// `rows` samples of `sample_shape` back to back ({C, H, W} with C of 1 or 3, or {H, W}). Values
// are mapped linearly from [lo, hi] to 0..255 and clipped; cells are separated by 2 white pixels
// and small images are enlarged by an integer nearest-neighbour factor (96 / the larger side,
// from 1 to 8: 3 for 28x28) so that they can be seen. Colour samples are taken as RGB. Throws core::Error on a shape that is not an image, short columns, or a write failure.
void write_image_grid(const std::string& png_path, std::span<const std::int64_t> sample_shape,
                      const std::vector<std::span<const float>>& columns, std::size_t rows, float lo, float hi);

// The perturbation adversarial - original of each sample made visible in [lo, hi]: the middle
// (grey) is no change, and each sample's largest change reaches lo or hi
// (lo + (hi - lo) * (0.5 + delta / (2 * max|delta|))).
std::vector<float> render_perturbation(std::span<const float> originals, std::span<const float> adversarials,
                                       std::size_t sample_size, float lo, float hi);

// write_image_grid with three columns: originals | perturbation (render_perturbation) | adversarials.
void write_attack_grid(const std::string& png_path, std::span<const std::int64_t> sample_shape,
                       std::span<const float> originals, std::span<const float> adversarials, std::size_t rows, float lo,
                       float hi);

}  // namespace aegis::models
