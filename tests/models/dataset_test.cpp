#include <gtest/gtest.h>
#include <zlib.h>

// OpenCV 4.6's headers are not clean under C++20 warnings (see dataset.cpp).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#pragma GCC diagnostic pop

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/models/dataset.h"
#include "test_support.h"

namespace aegis::models {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

const fs::path kFashion = kFashionMnistDir;

// The first n decompressed bytes, read with zlib's own gz reader.
Bytes gz_head(const fs::path& path, std::size_t n) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) return {};
  Bytes out(n);
  const int got = gzread(file, out.data(), static_cast<unsigned>(n));
  gzclose(file);
  out.resize(got < 0 ? 0 : static_cast<std::size_t>(got));
  return out;
}

int run_python(const fs::path& dir, const std::string& script) {
  const fs::path file = dir / "script.py";
  std::ofstream(file) << script;
  return std::system(("/usr/bin/python3 '" + file.string() + "' '" + dir.string() + "'").c_str());
}

// The error message and hint load_dataset gives, or "" when it loads.
std::string load_error(const std::string& path, const DataOptions& options = {}) {
  try {
    load_dataset(path, options);
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | " + e.hint();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(Dataset, FashionMnistTestSplit) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  const Dataset data = load_dataset(kFashion.string());
  ASSERT_EQ(data.size(), 10000u);
  EXPECT_EQ(data.sample_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(data.sample_size(), 784u);
  ASSERT_EQ(data.x.size(), 10000u * 784u);
  EXPECT_TRUE(data.is_image);
  EXPECT_TRUE(std::all_of(data.x.begin(), data.x.end(), [](float v) { return v >= 0.0f && v <= 1.0f; }));
  EXPECT_EQ(*std::max_element(data.x.begin(), data.x.end()), 1.0f);
  std::array<int, 10> histogram{};
  for (int label : data.y) {
    ASSERT_TRUE(label >= 0 && label < 10) << label;
    ++histogram[static_cast<std::size_t>(label)];
  }
  for (int count : histogram) EXPECT_EQ(count, 1000);  // the test split has 1,000 of each class
  ASSERT_EQ(data.class_names.size(), 10u);
  EXPECT_EQ(data.class_names[9], "Ankle boot");
  EXPECT_TRUE(contains(data.description, "Fashion-MNIST test split")) << data.description;

  // The IDX header's dims, read independently, match; pixels are the file's bytes / 255.
  const Bytes head = gz_head(kFashion / "t10k-images-idx3-ubyte.gz", 16 + 784);
  ASSERT_EQ(head.size(), 16u + 784u);
  EXPECT_EQ((head[4] << 24 | head[5] << 16 | head[6] << 8 | head[7]), 10000);
  EXPECT_EQ((head[8] << 24 | head[9] << 16 | head[10] << 8 | head[11]), 28);
  EXPECT_EQ((head[12] << 24 | head[13] << 16 | head[14] << 8 | head[15]), 28);
  for (std::size_t i = 0; i < 784; ++i) ASSERT_FLOAT_EQ(data.x[i], head[16 + i] / 255.0f) << i;
  const Bytes labels = gz_head(kFashion / "t10k-labels-idx1-ubyte.gz", 8 + 10);
  for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(data.y[i], labels[8 + i]);
}

TEST(Dataset, FashionMnistTrainSplitWithOffsetAndLimit) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  DataOptions options;
  options.split = "train";
  options.offset = 59990;
  options.limit = 50;  // only 10 remain
  const Dataset data = load_dataset(kFashion.string(), options);
  ASSERT_EQ(data.size(), 10u);
  EXPECT_EQ(data.x.size(), 10u * 784u);
  EXPECT_TRUE(contains(data.description, "samples 59990..59999 of 60000")) << data.description;
  const Bytes labels = gz_head(kFashion / "train-labels-idx1-ubyte.gz", 8 + 60000);
  ASSERT_EQ(labels.size(), 60008u);
  for (std::size_t i = 0; i < 10; ++i) EXPECT_EQ(data.y[i], labels[8 + 59990 + i]);

  options.offset = 60000;
  EXPECT_TRUE(contains(load_error(kFashion.string(), options), "offset 60000 is past the 60000 samples"));
  options = {};
  options.split = "validation";
  EXPECT_TRUE(contains(load_error(kFashion.string(), options), "use --split test or --split train"));
  options = {};
  options.scale = 1.0f;
  options.limit = 3;
  const Dataset raw = load_dataset(kFashion.string(), options);
  EXPECT_EQ(*std::max_element(raw.x.begin(), raw.x.end()), 255.0f);
}

TEST(Dataset, IdxImagesFileFindsItsLabels) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  DataOptions options;
  options.limit = 5;
  const Dataset data = load_dataset((kFashion / "t10k-images-idx3-ubyte.gz").string(), options);
  EXPECT_EQ(data.size(), 5u);
  const Dataset folder = load_dataset(kFashion.string(), options);
  EXPECT_EQ(data.x, folder.x);
  EXPECT_EQ(data.y, folder.y);
  // Flat samples: reshape 1x28x28 to 784.
  options.shape = std::vector<std::int64_t>{784};
  EXPECT_EQ(load_dataset(kFashion.string(), options).sample_shape, (std::vector<std::int64_t>{784}));
  options.shape = std::vector<std::int64_t>{1, 28, 27};
  EXPECT_TRUE(contains(load_error(kFashion.string(), options), "has 756 values per sample, the data has 784"));
  // Labels that belong to another file are refused.
  options = {};
  options.labels_path = (kFashion / "train-labels-idx1-ubyte.gz").string();
  EXPECT_TRUE(contains(load_error((kFashion / "t10k-images-idx3-ubyte.gz").string(), options), "60000 labels"));
}

TEST(Dataset, MissingDataSaysWhatToInstall) {
  test::TempDir dir("aegis_dataset_empty");
  const std::string empty = load_error(dir.path.string());
  EXPECT_TRUE(contains(empty, "t10k-images-idx3-ubyte.gz")) << empty;
  EXPECT_TRUE(contains(empty, "dataset-fashion-mnist")) << empty;
  EXPECT_TRUE(contains(load_error("/nonexistent/fashion-mnist"), "dataset-fashion-mnist"));
  // A folder with only the training split.
  std::ofstream(dir.path / "train-images-idx3-ubyte.gz") << "";
  EXPECT_TRUE(contains(load_error(dir.path.string()), "no test split")) << load_error(dir.path.string());
  std::ofstream(dir.path / "notes.bin") << "hello";
  EXPECT_TRUE(contains(load_error((dir.path / "notes.bin").string()), "cannot tell what kind of data set"));
}

TEST(Dataset, TruncatedIdxIsAClearError) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  test::TempDir dir("aegis_dataset_cut");
  const Bytes whole = test::read_file(kFashion / "t10k-labels-idx1-ubyte.gz");
  std::ofstream(dir.path / "t10k-labels-idx1-ubyte.gz", std::ios::binary)
      .write(reinterpret_cast<const char*>(whole.data()), static_cast<std::streamsize>(whole.size() / 2));
  fs::copy_file(kFashion / "t10k-images-idx3-ubyte.gz", dir.path / "t10k-images-idx3-ubyte.gz");
  const std::string error = load_error(dir.path.string());
  EXPECT_TRUE(contains(error, "t10k-labels-idx1-ubyte.gz")) << error;
  EXPECT_TRUE(contains(error, "cut off")) << error;
}

// Arrays made by numpy: inputs, labels, one-hot labels and an .npz.
constexpr const char* kMakeArrays = R"(import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(3)
x = rng.integers(0, 256, (20, 1, 8, 8), dtype=np.uint8)
y = np.arange(20, dtype=np.int64) % 4
np.save(f"{d}/x_u1.npy", x)
np.save(f"{d}/y.npy", y)
np.save(f"{d}/y_onehot.npy", np.eye(4, dtype=np.float32)[y])
np.save(f"{d}/y_short.npy", y[:19])
np.save(f"{d}/y_negative.npy", y - 1)
np.save(f"{d}/x_f4_flat.npy", (x.reshape(20, 64) / 255.0).astype(np.float32))
np.save(f"{d}/x_f8_fortran.npy", np.asfortranarray(x.reshape(20, 64).astype(np.float64)))
bad = (x.reshape(20, 64) / 255.0).astype(np.float32)
bad[7, 3] = np.nan
np.save(f"{d}/x_nan.npy", bad)
np.savez(f"{d}/data.npz", x=x, y=y)
np.savez_compressed(f"{d}/positional.npz", x, y)
np.savez(f"{d}/nolabels.npz", images=x)
x.tofile(f"{d}/x_u1.raw")
)";

TEST(Dataset, NumpyArraysWithLabels) {
  test::TempDir dir("aegis_dataset_npy");
  ASSERT_EQ(run_python(dir.path, kMakeArrays), 0) << "/usr/bin/python3 with numpy must be installed";
  const Bytes raw = test::read_file(dir.path / "x_u1.raw");
  DataOptions options;
  options.labels_path = (dir.path / "y.npy").string();
  const Dataset data = load_dataset((dir.path / "x_u1.npy").string(), options);
  ASSERT_EQ(data.size(), 20u);
  EXPECT_EQ(data.sample_shape, (std::vector<std::int64_t>{1, 8, 8}));
  EXPECT_TRUE(data.is_image);
  ASSERT_EQ(data.x.size(), raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) ASSERT_FLOAT_EQ(data.x[i], raw[i] / 255.0f);
  for (std::size_t i = 0; i < 20; ++i) EXPECT_EQ(data.y[i], static_cast<int>(i % 4));

  options.offset = 5;
  options.limit = 3;
  const Dataset slice = load_dataset((dir.path / "x_u1.npy").string(), options);
  EXPECT_EQ(slice.y, (std::vector<int>{1, 2, 3}));
  EXPECT_EQ(slice.x, std::vector<float>(data.x.begin() + 5 * 64, data.x.begin() + 8 * 64));

  options = {};
  options.labels_path = (dir.path / "y_onehot.npy").string();
  options.shape = std::vector<std::int64_t>{1, 8, 8};
  const Dataset flat = load_dataset((dir.path / "x_f4_flat.npy").string(), options);
  EXPECT_EQ(flat.sample_shape, (std::vector<std::int64_t>{1, 8, 8}));
  EXPECT_EQ(flat.y, data.y);
  for (std::size_t i = 0; i < raw.size(); ++i) ASSERT_NEAR(flat.x[i], data.x[i], 1e-6) << i;

  options = {};
  options.labels_path = (dir.path / "y.npy").string();
  options.scale = 1.0f / 255.0f;
  const Dataset fortran = load_dataset((dir.path / "x_f8_fortran.npy").string(), options);
  for (std::size_t i = 0; i < raw.size(); ++i) ASSERT_FLOAT_EQ(fortran.x[i], data.x[i]) << i;

  options = {};
  EXPECT_TRUE(contains(load_error((dir.path / "x_u1.npy").string(), options), "--labels"));
  options.labels_path = (dir.path / "y_short.npy").string();
  EXPECT_TRUE(contains(load_error((dir.path / "x_u1.npy").string(), options), "19 labels"));
  options.labels_path = (dir.path / "y_negative.npy").string();
  EXPECT_TRUE(contains(load_error((dir.path / "x_u1.npy").string(), options), "not a class index"));
  options.labels_path = (dir.path / "y.npy").string();
  EXPECT_TRUE(contains(load_error((dir.path / "x_nan.npy").string(), options), "sample 7"));
  options.max_values = 1000;
  EXPECT_TRUE(contains(load_error((dir.path / "x_u1.npy").string(), options), "--limit"));
}

TEST(Dataset, NumpyArchives) {
  test::TempDir dir("aegis_dataset_npz");
  ASSERT_EQ(run_python(dir.path, kMakeArrays), 0) << "/usr/bin/python3 with numpy must be installed";
  const Dataset named = load_dataset((dir.path / "data.npz").string());
  EXPECT_EQ(named.size(), 20u);
  EXPECT_EQ(named.sample_shape, (std::vector<std::int64_t>{1, 8, 8}));
  const Dataset positional = load_dataset((dir.path / "positional.npz").string());
  EXPECT_EQ(positional.x, named.x);
  EXPECT_EQ(positional.y, named.y);
  EXPECT_TRUE(contains(load_error((dir.path / "nolabels.npz").string()), "no labels array"));
  DataOptions options;
  options.labels_path = (dir.path / "y.npy").string();
  EXPECT_EQ(load_dataset((dir.path / "nolabels.npz").string(), options).y, named.y);
}

// A w x h image whose pixels encode (sample, position) so that the test can check every value.
cv::Mat gray_image(int w, int h, int seed) {
  cv::Mat image(h, w, CV_8UC1);
  for (int y = 0; y < h; ++y) {
    for (int x = 0; x < w; ++x) image.at<std::uint8_t>(y, x) = static_cast<std::uint8_t>((seed * 31 + y * w + x) % 256);
  }
  return image;
}

TEST(Dataset, ImageFolderOfPngClasses) {
  test::TempDir dir("aegis_dataset_images");
  // Class folders out of order on disk; sorted names are the class indices: bird=0, cat=1, dog=2.
  const std::vector<std::pair<std::string, int>> files = {{"dog", 2}, {"cat", 3}, {"bird", 1}};
  int seed = 0;
  for (const auto& [name, count] : files) {
    fs::create_directories(dir.path / name);
    for (int i = 0; i < count; ++i) {
      ASSERT_TRUE(cv::imwrite((dir.path / name / (std::to_string(i) + ".png")).string(), gray_image(8, 6, seed++)));
    }
  }
  std::ofstream(dir.path / "cat" / "README.txt") << "not an image";
  std::ofstream(dir.path / "cat" / ".DS_Store") << "hidden";

  const Dataset data = load_dataset(dir.path.string());
  ASSERT_EQ(data.size(), 6u);
  EXPECT_EQ(data.sample_shape, (std::vector<std::int64_t>{1, 6, 8}));  // CHW
  EXPECT_TRUE(data.is_image);
  EXPECT_EQ(data.class_names, (std::vector<std::string>{"bird", "cat", "dog"}));
  // Classes in turn: bird/0, cat/0, dog/0, cat/1, dog/1, cat/2.
  EXPECT_EQ(data.y, (std::vector<int>{0, 1, 2, 1, 2, 1}));
  const cv::Mat first_cat = gray_image(8, 6, 2);  // dog got seeds 0-1, cat 2-4, bird 5
  const auto sample = data.sample(1);
  for (int y = 0; y < 6; ++y) {
    for (int x = 0; x < 8; ++x) ASSERT_FLOAT_EQ(sample[static_cast<std::size_t>(y * 8 + x)], first_cat.at<std::uint8_t>(y, x) / 255.0f);
  }
  EXPECT_TRUE(contains(data.description, "1 non-image files skipped")) << data.description;

  DataOptions options;
  options.limit = 3;
  EXPECT_EQ(load_dataset(dir.path.string(), options).y, (std::vector<int>{0, 1, 2}));  // a limit keeps every class

  options = {};
  options.image_mode = "rgb";
  const Dataset rgb = load_dataset(dir.path.string(), options);
  EXPECT_EQ(rgb.sample_shape, (std::vector<std::int64_t>{3, 6, 8}));
  EXPECT_EQ(rgb.x[0], rgb.x[48]);  // gray expands to three equal planes

  // One image of another size: the error names it.
  ASSERT_TRUE(cv::imwrite((dir.path / "dog" / "9.png").string(), gray_image(9, 6, 0)));
  const std::string mismatch = load_error(dir.path.string());
  EXPECT_TRUE(contains(mismatch, "9.png is 9x6")) << mismatch;
  EXPECT_TRUE(contains(mismatch, "all images must share one size")) << mismatch;
  fs::remove(dir.path / "dog" / "9.png");

  // A damaged file with an image name is an error, not a skip.
  std::ofstream(dir.path / "bird" / "broken.png") << "\x89PNG\r\n\x1a\n not really";
  EXPECT_TRUE(contains(load_error(dir.path.string()), "broken.png")) << load_error(dir.path.string());
}

TEST(Dataset, ImageFolderColourAndSplits) {
  test::TempDir dir("aegis_dataset_rgb");
  for (const char* split : {"train", "val"}) {
    for (const char* name : {"red", "blue"}) {
      fs::create_directories(dir.path / split / name);
      // OpenCV writes BGR: pure red is (0, 0, 255).
      const cv::Scalar colour = std::string(name) == "red" ? cv::Scalar(0, 0, 255) : cv::Scalar(255, 0, 0);
      cv::Mat image(4, 5, CV_8UC3, colour);
      image.at<cv::Vec3b>(0, 0) = cv::Vec3b(10, 20, 30);
      ASSERT_TRUE(cv::imwrite((dir.path / split / name / "a.png").string(), image));
      ASSERT_TRUE(cv::imwrite((dir.path / split / name / "b.jpg").string(), image));
    }
  }
  const Dataset test_split = load_dataset(dir.path.string());  // "test" falls back to val/
  EXPECT_TRUE(contains(test_split.description, "val split")) << test_split.description;
  ASSERT_EQ(test_split.size(), 4u);
  EXPECT_EQ(test_split.sample_shape, (std::vector<std::int64_t>{3, 4, 5}));  // auto: colour images
  EXPECT_EQ(test_split.class_names, (std::vector<std::string>{"blue", "red"}));
  // Sample 0 is blue/a.png; RGB planes in order, pixel (0,0) was BGR (10, 20, 30).
  const auto blue = test_split.sample(0);
  EXPECT_FLOAT_EQ(blue[0], 30 / 255.0f);
  EXPECT_FLOAT_EQ(blue[20], 20 / 255.0f);
  EXPECT_FLOAT_EQ(blue[40], 10 / 255.0f);
  EXPECT_FLOAT_EQ(blue[1], 0.0f);
  EXPECT_FLOAT_EQ(blue[41], 1.0f);
  const auto red = test_split.sample(1);
  EXPECT_FLOAT_EQ(red[1], 1.0f);
  EXPECT_FLOAT_EQ(red[41], 0.0f);

  DataOptions options;
  options.split = "train";
  EXPECT_TRUE(contains(load_dataset(dir.path.string(), options).description, "train split"));
  options.split = "holdout";
  EXPECT_TRUE(contains(load_error(dir.path.string(), options), "no 'holdout' split folder")) << load_error(dir.path.string(), options);
  options = {};
  options.image_mode = "gray";
  EXPECT_EQ(load_dataset(dir.path.string(), options).sample_shape, (std::vector<std::int64_t>{1, 4, 5}));
  options.image_mode = "cmyk";
  EXPECT_TRUE(contains(load_error(dir.path.string(), options), "unknown image mode"));
}

TEST(Dataset, CsvTables) {
  test::TempDir dir("aegis_dataset_csv");
  ASSERT_EQ(run_python(dir.path, R"(import csv, sys
d = sys.argv[1]
rows = [[5.1, 3.5, "setosa"], [7.0, 3.2, "versicolor"], [6.3, 3.3, "virginica"], [4.9, 3.0, "setosa"]]
with open(f"{d}/iris.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["sepal length", "sepal width", "species"])
    w.writerows(rows)
with open(f"{d}/numeric.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerows([[1, 0.5, -2], [0, 1.5, 3], [2, 2.5, 4]])
with open(f"{d}/signed.tsv", "w", newline="") as f:
    w = csv.writer(f, delimiter="\t")
    w.writerow(["label", "a", "b"])
    w.writerows([[-1, 1, 2], [1, 3, 4], [-1, 5, 6]])
with open(f"{d}/text_feature.csv", "w", newline="") as f:
    csv.writer(f).writerows([["x", "y", "label"], [1, 2, 0], [3, "abc", 1]])
with open(f"{d}/ragged.csv", "w", newline="") as f:
    f.write("a,b,label\n1,2,0\n3,1\n")
)"),
            0);
  const Dataset iris = load_dataset((dir.path / "iris.csv").string());
  ASSERT_EQ(iris.size(), 4u);
  EXPECT_EQ(iris.sample_shape, (std::vector<std::int64_t>{2}));
  EXPECT_FALSE(iris.is_image);
  EXPECT_EQ(iris.x, (std::vector<float>{5.1f, 3.5f, 7.0f, 3.2f, 6.3f, 3.3f, 4.9f, 3.0f}));
  EXPECT_EQ(iris.class_names, (std::vector<std::string>{"setosa", "versicolor", "virginica"}));
  EXPECT_EQ(iris.y, (std::vector<int>{0, 1, 2, 0}));
  EXPECT_TRUE(contains(iris.description, "setosa=0")) << iris.description;

  DataOptions options;
  options.label_column = "0";
  const Dataset numeric = load_dataset((dir.path / "numeric.csv").string(), options);  // no header: column by index
  EXPECT_EQ(numeric.y, (std::vector<int>{1, 0, 2}));
  EXPECT_EQ(numeric.x, (std::vector<float>{0.5f, -2, 1.5f, 3, 2.5f, 4}));
  options.label_column = "";
  options.offset = 1;
  const Dataset last = load_dataset((dir.path / "numeric.csv").string(), options);
  EXPECT_EQ(last.y, (std::vector<int>{1, 2}));  // -2, 3, 4: a negative label makes the values class names
  EXPECT_EQ(last.class_names, (std::vector<std::string>{"-2", "3", "4"}));

  options = {};
  options.label_column = "label";
  const Dataset signed_labels = load_dataset((dir.path / "signed.tsv").string(), options);
  EXPECT_EQ(signed_labels.y, (std::vector<int>{0, 1, 0}));  // -1 and 1 map to classes 0 and 1
  EXPECT_EQ(signed_labels.class_names, (std::vector<std::string>{"-1", "1"}));
  EXPECT_EQ(signed_labels.x, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  options.label_column = "nope";
  EXPECT_TRUE(contains(load_error((dir.path / "signed.tsv").string(), options), "columns: label, a, b"));

  const std::string text_feature = load_error((dir.path / "text_feature.csv").string());
  EXPECT_TRUE(contains(text_feature, "line 3, column 'y'")) << text_feature;
  EXPECT_TRUE(contains(text_feature, "'abc' is not a number")) << text_feature;
  const std::string ragged = load_error((dir.path / "ragged.csv").string());
  EXPECT_TRUE(contains(ragged, "line 3")) << ragged;
  EXPECT_TRUE(contains(ragged, "ragged")) << ragged;
}

TEST(Dataset, ImageGridWritesOriginalsPerturbationsAndAdversarials) {
  test::TempDir dir("aegis_dataset_grid");
  const std::vector<std::int64_t> shape = {1, 28, 28};
  std::vector<float> originals(2 * 784), adversarials(2 * 784);
  for (std::size_t i = 0; i < originals.size(); ++i) {
    originals[i] = static_cast<float>(i % 28) / 27.0f;
    adversarials[i] = originals[i] + (i % 2 ? 0.1f : -0.1f);  // the grid clips what leaves [0, 1]
  }
  adversarials[784] = originals[784];
  const std::string path = (dir.path / "grid.png").string();
  write_attack_grid(path, shape, originals, adversarials, 2, 0.0f, 1.0f);
  const cv::Mat grid = cv::imread(path, cv::IMREAD_UNCHANGED);
  ASSERT_FALSE(grid.empty());
  EXPECT_EQ(grid.channels(), 1);
  EXPECT_EQ(grid.cols, 3 * 84 + 2 * 2);  // three columns of 28x3, two separators
  EXPECT_EQ(grid.rows, 2 * 84 + 2);
  // Nearest-neighbour x3: pixel (y, x) of the first original is value (x / 3) / 27.
  EXPECT_EQ(grid.at<std::uint8_t>(0, 0), 0);
  EXPECT_EQ(grid.at<std::uint8_t>(5, 83), 255);
  EXPECT_EQ(grid.at<std::uint8_t>(5, 84), 255);  // separator
  EXPECT_EQ(grid.at<std::uint8_t>(5, 30), static_cast<int>(std::lround(10 / 27.0 * 255)));
  // The perturbation column: -0.1 at even pixels maps to black, +0.1 to white.
  EXPECT_EQ(grid.at<std::uint8_t>(0, 86), 0);
  EXPECT_EQ(grid.at<std::uint8_t>(0, 89), 255);
  // Second row, first pixel unchanged: grey.
  EXPECT_EQ(grid.at<std::uint8_t>(86, 86), 128);

  const auto rendered = render_perturbation(std::vector<float>{0, 0, 0}, std::vector<float>{0.5f, -0.25f, 0}, 3, -1, 1);
  EXPECT_EQ(rendered, (std::vector<float>{1.0f, -0.5f, 0.0f}));

  // Colour samples are CHW in RGB order; the PNG holds them as such.
  const std::vector<std::int64_t> rgb_shape = {3, 2, 2};
  std::vector<float> rgb(12, 0.0f);
  for (int i = 0; i < 4; ++i) rgb[static_cast<std::size_t>(i)] = 1.0f;  // red plane
  const std::string rgb_path = (dir.path / "rgb.png").string();
  write_image_grid(rgb_path, rgb_shape, {std::span<const float>(rgb)}, 1, 0.0f, 1.0f);
  const cv::Mat red = cv::imread(rgb_path, cv::IMREAD_COLOR);
  ASSERT_EQ(red.cols, 2 * 8);  // 2x2 enlarged x8 (the largest factor)
  EXPECT_EQ(red.at<cv::Vec3b>(0, 0), cv::Vec3b(0, 0, 255));  // BGR

  const std::vector<std::int64_t> flat = {10};
  EXPECT_THROW(write_image_grid(rgb_path, flat, {std::span<const float>(rgb)}, 1, 0, 1), core::Error);
  EXPECT_THROW(write_image_grid(rgb_path, rgb_shape, {std::span<const float>(rgb)}, 2, 0, 1), core::Error);
  EXPECT_THROW(write_image_grid((dir.path / "no" / "x.png").string(), rgb_shape, {std::span<const float>(rgb)}, 1, 0, 1),
               core::Error);
}

}  // namespace
}  // namespace aegis::models
