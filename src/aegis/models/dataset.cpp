#include "aegis/models/dataset.h"

// OpenCV 4.6's headers add enums of different types, which C++20 deprecates; the build may not
// mark them as system headers, so keep -Werror about our own code only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#pragma GCC diagnostic pop

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <set>
#include <system_error>

#include "aegis/core/error.h"
#include "aegis/core/mapped_file.h"
#include "aegis/formats/csv_table.h"
#include "aegis/formats/idx.h"
#include "aegis/formats/npy.h"
#include "aegis/formats/zip.h"

namespace aegis::models {
namespace fs = std::filesystem;
namespace {

constexpr std::uint64_t kMaxImageFileBytes = 64ull << 20;
constexpr std::uint64_t kMaxImagePixels = 1ull << 26;  // 8192 x 8192
constexpr std::size_t kMaxImageFiles = 10'000'000;
constexpr int kMaxFolderDepth = 8;
constexpr std::uint64_t kMaxGridPixels = 1ull << 28;

// The ten Fashion-MNIST classes, in label order (Zalando's README).
const std::array<const char*, 10> kFashionMnistClasses = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

std::string lower(std::string text) {
  for (auto& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

std::string shape_text(std::span<const std::int64_t> shape) {
  std::string text;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += 'x';
    text += std::to_string(shape[i]);
  }
  return text.empty() ? "scalar" : text;
}

std::uint64_t shape_product(std::span<const std::int64_t> shape) {
  std::uint64_t product = 1;
  for (auto dim : shape) product *= static_cast<std::uint64_t>(dim);
  return product;
}

// Malformed bytes become a user error that names the file and the byte.
template <typename F>
auto reading(const std::string& path, F&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const core::FormatError& e) {
    throw core::Error("cannot read " + path + ": " + e.what() + " (at byte " + std::to_string(e.offset()) + ")",
                      "check that the file is complete and of the expected format (re-download or re-export it)");
  }
}

struct Selection {
  std::size_t first = 0, count = 0, total = 0;
};

Selection select(std::size_t total, const DataOptions& options, const std::string& source) {
  if (total == 0) throw core::Error("no samples in " + source, "check that the data set is not empty");
  if (options.offset >= total) {
    throw core::Error("offset " + std::to_string(options.offset) + " is past the " + std::to_string(total) + " samples in " + source,
                      "use an offset below " + std::to_string(total));
  }
  Selection selection;
  selection.total = total;
  selection.first = options.offset;
  selection.count = total - options.offset;
  if (options.limit != 0 && options.limit < selection.count) selection.count = options.limit;
  return selection;
}

std::string selection_text(const Selection& s) {
  if (s.first == 0 && s.count == s.total) return "all " + std::to_string(s.total) + " samples";
  return "samples " + std::to_string(s.first) + ".." + std::to_string(s.first + s.count - 1) + " of " + std::to_string(s.total);
}

void check_budget(std::uint64_t samples, std::uint64_t sample_size, const DataOptions& options, const std::string& source) {
  if (sample_size != 0 && samples > options.max_values / sample_size) {
    throw core::Error(source + ": " + std::to_string(samples) + " samples of " + std::to_string(sample_size) +
                          " values are more than the limit of " + std::to_string(options.max_values) + " values in memory",
                      "use --limit to take fewer samples");
  }
}

float resolve_scale(const DataOptions& options, bool eight_bit, std::string& text) {
  if (options.scale != 0) {
    if (!std::isfinite(options.scale)) throw core::Error("the scale must be a finite number", "pass e.g. --scale 0.00392157");
    text = "scaled by " + std::to_string(options.scale);
    return options.scale;
  }
  text = eight_bit ? "8-bit values scaled by 1/255" : "values unscaled";
  return eight_bit ? 1.0f / 255.0f : 1.0f;
}

void apply_scale(std::vector<float>& values, float scale) {
  if (scale == 1.0f) return;
  for (auto& v : values) v *= scale;
}

// Class indices from label values: a vector (N or N x 1) of non-negative integers, or one-hot rows.
std::vector<int> class_indices(const std::vector<float>& values, std::span<const std::uint64_t> shape, const std::string& source,
                               std::size_t first_index) {
  const std::size_t rows = shape.empty() ? values.size() : static_cast<std::size_t>(shape[0]);
  std::size_t width = rows == 0 ? 1 : values.size() / rows;
  std::vector<int> labels(rows);
  if (shape.size() > 2 || (rows != 0 && values.size() % rows != 0)) {
    throw core::Error(source + ": labels must be a vector of class indices or one-hot rows", "save the labels as a 1-d integer array");
  }
  if (width == 1) {
    for (std::size_t i = 0; i < rows; ++i) {
      const float v = values[i];
      if (!(v >= 0) || v != std::floor(v) || v > static_cast<float>(1 << 24)) {
        throw core::Error(source + ": label " + std::to_string(v) + " of sample " + std::to_string(first_index + i) +
                              " is not a class index (a non-negative integer)",
                          "labels must be class indices 0..K-1");
      }
      labels[i] = static_cast<int>(v);
    }
    return labels;
  }
  for (std::size_t i = 0; i < rows; ++i) {
    int hot = -1;
    for (std::size_t k = 0; k < width; ++k) {
      const float v = values[i * width + k];
      if (v == 1 && hot < 0) {
        hot = static_cast<int>(k);
      } else if (v != 0) {
        hot = -2;
        break;
      }
    }
    if (hot < 0) {
      throw core::Error(source + ": row " + std::to_string(first_index + i) + " of the " + std::to_string(width) +
                            "-column labels is not one-hot",
                        "save the labels as a 1-d array of class indices");
    }
    labels[i] = hot;
  }
  return labels;
}

// Labels from an IDX (.gz) or .npy file holding `expected_total` of them; returns the selection.
std::vector<int> read_label_file(const std::string& path, const Selection& selection, std::uint64_t expected_total,
                                 const DataOptions& options, const std::string& inputs) {
  const core::MappedFile file(path);
  const auto bytes = file.bytes();
  return reading(path, [&] {
    std::vector<float> values;
    std::vector<std::uint64_t> shape;
    std::uint64_t total = 0;
    if (formats::looks_like_npy(bytes)) {
      const auto header = formats::parse_npy_header(bytes);
      total = header.shape.empty() ? 1 : header.shape[0];
      auto array = formats::read_npy_records(bytes, options.max_values, selection.first, selection.count);
      values = std::move(array.values);
      shape = std::move(array.shape);
    } else if (formats::looks_like_idx(bytes) || formats::looks_like_gzip(bytes)) {
      auto array = formats::parse_idx(bytes, options.max_values, {selection.first, selection.count});
      total = array.total_records;
      values = std::move(array.values);
      shape.assign(array.dims.begin(), array.dims.end());
    } else {
      throw core::Error("cannot read labels from " + path + ": it is neither .npy nor IDX (by its first bytes)",
                        "pass the labels as an IDX file (as MNIST ships them) or a .npy of class indices");
    }
    if (total != expected_total) {
      throw core::Error(path + " holds " + std::to_string(total) + " labels, but " + inputs + " holds " +
                            std::to_string(expected_total) + " samples",
                        "pass the labels file that belongs to the inputs");
    }
    return class_indices(values, shape, path, selection.first);
  });
}

// Reshape (if asked), refuse NaN and infinity, and note whether samples are images.
void finish(Dataset& data, const DataOptions& options, bool from_images) {
  const std::uint64_t sample_size = shape_product(data.sample_shape);
  if (options.shape) {
    const auto& shape = *options.shape;
    if (shape.empty() || std::any_of(shape.begin(), shape.end(), [](std::int64_t d) { return d <= 0; })) {
      throw core::Error("the shape " + shape_text(shape) + " has a dimension that is not positive", "pass e.g. --shape 1,28,28");
    }
    std::uint64_t wanted = 1;
    for (auto dim : shape) {
      if (wanted > std::numeric_limits<std::uint64_t>::max() / static_cast<std::uint64_t>(dim)) wanted = 0;
      wanted *= static_cast<std::uint64_t>(dim);
    }
    if (wanted != sample_size) {
      throw core::Error("the shape " + shape_text(shape) + " has " + std::to_string(wanted) + " values per sample, the data has " +
                            std::to_string(sample_size) + " (" + shape_text(data.sample_shape) + ")",
                        "pass a shape whose product is " + std::to_string(sample_size));
    }
    data.sample_shape = shape;
    data.description += ", reshaped to " + shape_text(shape);
  }
  for (std::size_t i = 0; i < data.x.size(); ++i) {
    if (!std::isfinite(data.x[i])) {
      const std::size_t sample = sample_size ? i / sample_size : 0;
      throw core::Error("sample " + std::to_string(sample) + " of the selection holds a NaN or infinite value",
                        "clean the data (NaN and infinity are not valid model inputs)");
    }
  }
  const auto& s = data.sample_shape;
  data.is_image = from_images || (s.size() == 3 && (s[0] == 1 || s[0] == 3));
  if (!data.y.empty()) {
    const int classes = *std::max_element(data.y.begin(), data.y.end()) + 1;
    data.description += ", labels 0.." + std::to_string(classes - 1);
  }
}

// ---------------------------------------------------------------------------------------------
// IDX

std::vector<std::int64_t> idx_sample_shape(const std::vector<std::uint32_t>& dims) {
  if (dims.size() == 1) return {1};
  if (dims.size() == 3) return {1, dims[1], dims[2]};
  return std::vector<std::int64_t>(dims.begin() + 1, dims.end());
}

Dataset load_idx(const std::string& images, const std::string& labels, const DataOptions& options, const std::string& name) {
  const formats::IdxRecordRange range{options.offset, options.limit == 0 ? std::numeric_limits<std::uint64_t>::max() : options.limit};
  auto array = reading(images, [&] { return formats::read_idx_file(images, options.max_values, range); });
  const Selection selection = select(static_cast<std::size_t>(array.total_records), options, images);
  Dataset data;
  data.sample_shape = idx_sample_shape(array.dims);
  std::string scale_text;
  const float scale = resolve_scale(options, array.type == formats::IdxType::U8, scale_text);
  data.x = std::move(array.values);
  apply_scale(data.x, scale);
  data.y = read_label_file(labels, selection, array.total_records, options, images);
  data.description = name + ": " + selection_text(selection) + " of " + shape_text(data.sample_shape) + " (" +
                     formats::idx_type_name(array.type) + "), " + scale_text;
  finish(data, options, array.dims.size() == 3);
  return data;
}

std::optional<fs::path> find_idx_file(const fs::path& dir, const std::string& prefix, const std::string& kind, char rank) {
  for (const std::string& middle : {"-" + kind + "-idx" + rank, "-" + kind + ".idx" + rank}) {
    for (const char* gz : {".gz", ""}) {
      fs::path candidate = dir / (prefix + middle + "-ubyte" + gz);
      std::error_code ec;
      if (fs::is_regular_file(candidate, ec)) return candidate;
    }
  }
  return std::nullopt;
}

bool has_idx_files(const fs::path& dir) {
  for (const char* prefix : {"t10k", "train"}) {
    if (find_idx_file(dir, prefix, "images", '3')) return true;
  }
  return false;
}

Dataset load_idx_folder(const fs::path& dir, const DataOptions& options) {
  std::string prefix;
  if (options.split == "test" || options.split == "t10k") prefix = "t10k";
  else if (options.split == "train") prefix = "train";
  else throw core::Error("unknown split '" + options.split + "' for the IDX folder " + dir.string(), "use --split test or --split train");
  const auto images = find_idx_file(dir, prefix, "images", '3');
  const auto labels = find_idx_file(dir, prefix, "labels", '1');
  if (!images || !labels) {
    throw core::Error("no " + options.split + " split in " + dir.string() + ": expected " + prefix + "-images-idx3-ubyte.gz and " +
                          prefix + "-labels-idx1-ubyte.gz (or the same names uncompressed)",
                      "use --split train or --split test, or install the Debian package dataset-fashion-mnist for " +
                          std::string(kFashionMnistDir));
  }
  const std::string folder = lower(dir.string());
  const bool fashion = folder.find("fashion") != std::string::npos;
  const std::string family = fashion ? "Fashion-MNIST" : folder.find("mnist") != std::string::npos ? "MNIST" : "IDX data set";
  Dataset data = load_idx(images->string(), labels->string(), options,
                          family + " " + options.split + " split (" + images->string() + ")");
  if (fashion) data.class_names.assign(kFashionMnistClasses.begin(), kFashionMnistClasses.end());
  return data;
}

std::string sibling_labels(const fs::path& images) {
  std::string name = images.filename().string();
  for (const auto& [from, to] : {std::pair<std::string, std::string>{"images-idx3", "labels-idx1"}, {"images.idx3", "labels.idx1"}}) {
    const auto at = name.find(from);
    if (at == std::string::npos) continue;
    std::string base = name.substr(0, at) + to + name.substr(at + from.size());
    if (ends_with(base, ".gz")) base.resize(base.size() - 3);
    for (const char* gz : {"", ".gz"}) {
      const fs::path candidate = images.parent_path() / (base + gz);
      std::error_code ec;
      if (fs::is_regular_file(candidate, ec)) return candidate.string();
    }
  }
  return {};
}

Dataset load_idx_file(const fs::path& path, const DataOptions& options) {
  std::string labels = options.labels_path;
  if (labels.empty()) labels = sibling_labels(path);
  if (labels.empty()) {
    throw core::Error("no labels for " + path.string(), "pass --labels FILE (IDX labels or a .npy of class indices)");
  }
  return load_idx(path.string(), labels, options, "IDX file " + path.string());
}

// ---------------------------------------------------------------------------------------------
// .npy and .npz

Dataset load_npy_bytes(std::span<const std::uint8_t> bytes, const std::string& source, const DataOptions& options,
                       const std::function<std::vector<int>(const Selection&, std::uint64_t)>& labels) {
  Dataset data;
  Selection selection;
  std::string scale_text;
  reading(source, [&] {
    const auto header = formats::parse_npy_header(bytes);
    if (header.shape.empty()) throw core::Error(source + " holds a single number (a 0-d array), not samples", "save an array whose first axis counts samples");
    selection = select(static_cast<std::size_t>(header.shape[0]), options, source);
    std::uint64_t sample_size = 1;
    for (std::size_t k = 1; k < header.shape.size(); ++k) sample_size *= header.shape[k];
    check_budget(selection.count, sample_size, options, source);
    auto array = formats::read_npy_records(bytes, options.max_values, selection.first, selection.count);
    if (array.shape.size() == 1) data.sample_shape = {1};
    else data.sample_shape.assign(array.shape.begin() + 1, array.shape.end());
    const float scale = resolve_scale(options, ends_with(array.descr, "u1"), scale_text);
    data.x = std::move(array.values);
    apply_scale(data.x, scale);
    data.description = source + " (" + array.descr + "): " + selection_text(selection) + " of " + shape_text(data.sample_shape) + ", " + scale_text;
    return 0;
  });
  data.y = labels(selection, selection.total);
  finish(data, options, false);
  return data;
}

Dataset load_npy(const fs::path& path, const DataOptions& options) {
  if (options.labels_path.empty()) {
    throw core::Error("no labels for " + path.string(), "pass --labels FILE (a .npy of class indices, as long as the inputs' first axis)");
  }
  const core::MappedFile file(path.string());
  return load_npy_bytes(file.bytes(), path.string(), options, [&](const Selection& selection, std::uint64_t total) {
    return read_label_file(options.labels_path, selection, total, options, path.string());
  });
}

Dataset load_npz(const fs::path& path, const DataOptions& options) {
  const core::MappedFile file(path.string());
  const std::string source = path.string();
  formats::ZipLimits limits;
  limits.max_inflated_size = std::max<std::uint64_t>(options.max_values * 8 + 4096, 1 << 20);
  limits.max_ratio = 5000;  // arrays of zeros compress well; the size cap above bounds the memory
  return reading(source, [&] {
    const auto archive = formats::read_zip(file.bytes(), limits);
    auto find = [&](std::initializer_list<const char*> names) -> const formats::ZipEntry* {
      for (const char* name : names) {
        for (const auto& entry : archive.entries) {
          if (entry.name == std::string(name) + ".npy") return &entry;
        }
      }
      return nullptr;
    };
    const auto* inputs = find({"x", "X", "arr_0", "images", "inputs", "data", "features"});
    const auto* labels = find({"y", "Y", "arr_1", "labels", "targets", "label"});
    if (!inputs) {
      throw core::Error(source + " holds no inputs array named x, X, arr_0, images, inputs, data or features",
                        "save it with numpy.savez(path, x=inputs, y=labels)");
    }
    auto member = [&](const formats::ZipEntry& entry, std::vector<std::uint8_t>& storage) {
      std::vector<formats::ZipAnomaly> anomalies;
      const auto bytes = formats::read_zip_member(file.bytes(), entry, storage, limits, true, &anomalies);
      for (const auto& anomaly : anomalies) {
        if (anomaly.kind == "crc-mismatch") throw core::FormatError(entry.name + ": its CRC does not match its data", entry.data_offset);
      }
      return bytes;
    };
    std::vector<std::uint8_t> input_storage, label_storage;
    const auto input_bytes = member(*inputs, input_storage);
    const std::string input_source = source + ":" + inputs->name;
    return load_npy_bytes(input_bytes, input_source, options, [&](const Selection& selection, std::uint64_t total) {
      if (!options.labels_path.empty()) return read_label_file(options.labels_path, selection, total, options, input_source);
      if (!labels) {
        throw core::Error(source + " holds no labels array named y, Y, arr_1, labels, targets or label",
                          "save it with numpy.savez(path, x=inputs, y=labels), or pass --labels FILE");
      }
      const auto label_bytes = member(*labels, label_storage);
      const std::string label_source = source + ":" + labels->name;
      return reading(label_source, [&] {
        const auto header = formats::parse_npy_header(label_bytes);
        const std::uint64_t label_total = header.shape.empty() ? 1 : header.shape[0];
        if (label_total != total) {
          throw core::Error(label_source + " holds " + std::to_string(label_total) + " labels, but " + input_source + " holds " +
                                std::to_string(total) + " samples",
                            "save labels that belong to the inputs");
        }
        auto array = formats::read_npy_records(label_bytes, options.max_values, selection.first, selection.count);
        return class_indices(array.values, array.shape, label_source, selection.first);
      });
    });
  });
}

// ---------------------------------------------------------------------------------------------
// Image folders

std::optional<std::pair<std::uint64_t, std::uint64_t>> image_dimensions(std::span<const std::uint8_t> b) {
  auto be16 = [&](std::size_t at) { return static_cast<std::uint64_t>(b[at] << 8 | b[at + 1]); };
  static constexpr std::uint8_t kPng[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
  if (b.size() >= 24 && std::equal(kPng, kPng + 8, b.begin())) {
    if (b[12] != 'I' || b[13] != 'H' || b[14] != 'D' || b[15] != 'R') return std::nullopt;
    const std::uint64_t w = be16(16) << 16 | be16(18);
    const std::uint64_t h = be16(20) << 16 | be16(22);
    if (w == 0 || h == 0) return std::nullopt;
    return std::pair{w, h};
  }
  if (b.size() >= 4 && b[0] == 0xFF && b[1] == 0xD8) {
    std::size_t pos = 2;
    while (pos < b.size()) {
      if (b[pos] != 0xFF) return std::nullopt;
      while (pos < b.size() && b[pos] == 0xFF) ++pos;
      if (pos >= b.size()) return std::nullopt;
      const std::uint8_t marker = b[pos++];
      if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD8)) continue;  // no length field
      if (marker == 0xD9 || marker == 0xDA) return std::nullopt;           // image data before any frame header
      if (pos + 2 > b.size()) return std::nullopt;
      const std::uint64_t length = be16(pos);
      if (length < 2) return std::nullopt;
      const bool frame = marker >= 0xC0 && marker <= 0xCF && marker != 0xC4 && marker != 0xC8 && marker != 0xCC;
      if (frame) {
        if (pos + 7 > b.size()) return std::nullopt;
        const std::uint64_t h = be16(pos + 3), w = be16(pos + 5);
        if (w == 0 || h == 0) return std::nullopt;
        return std::pair{w, h};
      }
      pos += length;
    }
  }
  return std::nullopt;
}

bool image_extension(const fs::path& path) {
  const std::string ext = lower(path.extension().string());
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

bool hidden(const fs::path& path) {
  const std::string name = path.filename().string();
  return !name.empty() && name[0] == '.';
}

std::vector<fs::path> subfolders(const fs::path& dir) {
  std::vector<fs::path> folders;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, fs::directory_options::skip_permission_denied, ec)) {
    std::error_code type_ec;
    if (!hidden(entry.path()) && entry.is_directory(type_ec)) folders.push_back(entry.path());
  }
  if (ec) throw core::Error("cannot list " + dir.string() + ": " + ec.message(), "check that the folder is readable");
  std::sort(folders.begin(), folders.end());
  return folders;
}

std::vector<fs::path> image_files(const fs::path& dir, std::size_t& skipped, std::size_t& total) {
  std::vector<fs::path> files;
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec);
  for (; !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (hidden(it->path())) {
      std::error_code hidden_ec;
      if (it->is_directory(hidden_ec)) it.disable_recursion_pending();
      continue;
    }
    if (it.depth() >= kMaxFolderDepth) it.disable_recursion_pending();
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    if (!image_extension(it->path())) {
      ++skipped;
      continue;
    }
    if (++total > kMaxImageFiles) {
      throw core::Error("more than " + std::to_string(kMaxImageFiles) + " images under " + dir.string(), "point at a smaller folder");
    }
    files.push_back(it->path());
  }
  if (ec) throw core::Error("cannot list " + dir.string() + ": " + ec.message(), "check that the folder is readable");
  std::sort(files.begin(), files.end());
  return files;
}

cv::Mat decode_image(const fs::path& path, int flags) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) throw core::Error("cannot read " + path.string() + ": " + ec.message());
  if (size > kMaxImageFileBytes) {
    throw core::Error(path.string() + " is " + std::to_string(size) + " bytes, more than the " + std::to_string(kMaxImageFileBytes >> 20) +
                          " MiB limit for one image",
                      "resize the images first");
  }
  const core::MappedFile file(path.string());
  const auto bytes = file.bytes();
  const auto dims = image_dimensions(bytes);
  if (!dims) {
    throw core::Error(path.string() + " is not a readable PNG or JPEG image (by its header)", "remove or re-export the file");
  }
  if (dims->first * dims->second > kMaxImagePixels) {
    throw core::Error(path.string() + " is " + std::to_string(dims->first) + "x" + std::to_string(dims->second) +
                          " pixels, more than the limit of " + std::to_string(kMaxImagePixels),
                      "resize the images first");
  }
  cv::Mat image;
  try {
    const cv::Mat raw(1, static_cast<int>(bytes.size()), CV_8U, const_cast<std::uint8_t*>(bytes.data()));
    image = cv::imdecode(raw, flags);
  } catch (const cv::Exception& e) {
    throw core::Error("cannot decode " + path.string() + ": " + e.what(), "remove or re-export the file");
  }
  if (image.empty()) throw core::Error("cannot decode " + path.string(), "check that it is a complete PNG or JPEG file");
  if (image.depth() != CV_8U) image.convertTo(image, CV_8U);
  return image;
}

Dataset load_image_folder(fs::path dir, std::vector<fs::path> classes, const DataOptions& options) {
  static const std::set<std::string> kSplitNames = {"train", "test", "val", "valid", "validation"};
  const bool split_layout = std::all_of(classes.begin(), classes.end(),
                                        [](const fs::path& p) { return kSplitNames.count(lower(p.filename().string())) > 0; });
  std::string split_note;
  if (split_layout) {
    std::vector<std::string> wanted = {options.split};
    if (options.split == "test") wanted = {"test", "val", "validation", "valid"};
    std::optional<fs::path> chosen;
    for (const auto& name : wanted) {
      for (const auto& folder : classes) {
        if (!chosen && lower(folder.filename().string()) == name) chosen = folder;
      }
    }
    if (!chosen) {
      std::string have;
      for (const auto& folder : classes) have += (have.empty() ? "" : ", ") + folder.filename().string();
      throw core::Error("no '" + options.split + "' split folder in " + dir.string() + " (it has " + have + ")",
                        "use --split with one of those folder names");
    }
    dir = *chosen;
    split_note = " (" + dir.filename().string() + " split)";
    classes = subfolders(dir);
    if (classes.empty()) throw core::Error(dir.string() + " has no class subfolders", "put each class's images in a subfolder named after the class");
  }

  std::vector<std::vector<fs::path>> per_class;
  std::size_t skipped = 0, total = 0;
  for (const auto& folder : classes) per_class.push_back(image_files(folder, skipped, total));
  // Round-robin over the classes so that a limit keeps every class.
  std::vector<std::pair<fs::path, int>> order;
  order.reserve(total);
  for (std::size_t j = 0;; ++j) {
    bool any = false;
    for (std::size_t c = 0; c < per_class.size(); ++c) {
      if (j < per_class[c].size()) {
        order.emplace_back(per_class[c][j], static_cast<int>(c));
        any = true;
      }
    }
    if (!any) break;
  }
  if (order.empty()) {
    throw core::Error("no PNG or JPEG images in the class folders of " + dir.string(), "put .png or .jpg files in one subfolder per class");
  }
  const Selection selection = select(order.size(), options, dir.string());

  std::string mode = lower(options.image_mode);
  if (mode == "grey") mode = "gray";
  if (mode == "color" || mode == "colour") mode = "rgb";
  if (mode != "auto" && mode != "gray" && mode != "rgb") {
    throw core::Error("unknown image mode '" + options.image_mode + "'", "use gray, rgb or auto");
  }
  const fs::path& first_file = order[selection.first].first;
  if (mode == "auto") mode = decode_image(first_file, cv::IMREAD_UNCHANGED).channels() <= 2 ? "gray" : "rgb";
  const int flags = (mode == "gray" ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR) | cv::IMREAD_IGNORE_ORIENTATION;
  const std::int64_t channels = mode == "gray" ? 1 : 3;

  Dataset data;
  std::string scale_text;
  const float scale = resolve_scale(options, true, scale_text);
  int height = 0, width = 0;
  for (std::size_t i = 0; i < selection.count; ++i) {
    const auto& [file, label] = order[selection.first + i];
    const cv::Mat image = decode_image(file, flags);
    if (i == 0) {
      height = image.rows;
      width = image.cols;
      data.sample_shape = {channels, height, width};
      check_budget(selection.count, shape_product(data.sample_shape), options, dir.string());
      data.x.reserve(selection.count * shape_product(data.sample_shape));
    } else if (image.rows != height || image.cols != width) {
      throw core::Error(file.string() + " is " + std::to_string(image.cols) + "x" + std::to_string(image.rows) + " but " +
                            first_file.string() + " is " + std::to_string(width) + "x" + std::to_string(height) +
                            ": all images must share one size",
                        "resize the images to one size first (e.g. mogrify -resize " + std::to_string(width) + "x" +
                            std::to_string(height) + "! *.png)");
    }
    const std::size_t plane = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
    const std::size_t base = data.x.size();
    data.x.resize(base + plane * static_cast<std::size_t>(channels));
    for (int yy = 0; yy < height; ++yy) {
      const std::uint8_t* row = image.ptr<std::uint8_t>(yy);
      for (int xx = 0; xx < width; ++xx) {
        const std::size_t at = static_cast<std::size_t>(yy) * static_cast<std::size_t>(width) + static_cast<std::size_t>(xx);
        if (channels == 1) {
          data.x[base + at] = row[xx] * scale;
        } else {
          for (int c = 0; c < 3; ++c) data.x[base + static_cast<std::size_t>(c) * plane + at] = row[3 * xx + (2 - c)] * scale;  // BGR -> RGB
        }
      }
    }
    data.y.push_back(label);
  }
  for (const auto& folder : classes) data.class_names.push_back(folder.filename().string());
  data.description = "image folder " + dir.string() + split_note + ": " + selection_text(selection) + " (classes in turn) of " +
                     shape_text(data.sample_shape) + " " + mode + ", " + scale_text + ", " + std::to_string(classes.size()) + " classes";
  if (skipped) data.description += ", " + std::to_string(skipped) + " non-image files skipped";
  finish(data, options, true);
  return data;
}

// ---------------------------------------------------------------------------------------------
// CSV

std::string trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return std::string(text);
}

Dataset load_csv(const fs::path& path, const DataOptions& options) {
  const std::string source = path.string();
  const core::MappedFile file(source);
  formats::CsvOptions csv;
  csv.delimiter = options.csv_delimiter != 0 ? options.csv_delimiter : lower(path.extension().string()) == ".tsv" ? '\t' : ',';
  const auto table = reading(source, [&] { return formats::read_csv(file.bytes(), csv); });
  if (table.row_count() == 0) throw core::Error("no data rows in " + source, "check that the file holds a table");
  if (table.column_count() < 2) {
    throw core::Error(source + " has " + std::to_string(table.column_count()) + " column; a data set needs features and a label column",
                      "check the delimiter (--csv-delimiter) and the file");
  }

  std::size_t label_column = table.column_count() - 1;
  if (!options.label_column.empty()) {
    if (const auto named = table.column_index(options.label_column)) {
      label_column = *named;
    } else {
      double index = 0;
      if (!formats::parse_csv_number(options.label_column, &index) || index < 0 || index != std::floor(index) ||
          index >= static_cast<double>(table.column_count())) {
        std::string names;
        for (const auto& name : table.header()) names += (names.empty() ? "" : ", ") + name;
        throw core::Error("no column '" + options.label_column + "' in " + source +
                              (names.empty() ? " (it has no header row)" : " (columns: " + names + ")"),
                          "name the label column by its header or its 0-based index");
      }
      label_column = static_cast<std::size_t>(index);
    }
  }
  const std::string label_name = table.has_header() ? table.header()[label_column] : "column " + std::to_string(label_column);

  // Labels over all rows, so that text classes get the same indices whatever the selection.
  std::vector<std::string> label_text(table.row_count());
  bool integers = true, negative = false;
  for (std::size_t r = 0; r < table.row_count(); ++r) {
    label_text[r] = trim(table.field(r, label_column));
    double value = 0;
    if (!formats::parse_csv_number(label_text[r], &value) || value != std::floor(value) || std::fabs(value) > 1e9) integers = false;
    else if (value < 0) negative = true;
  }
  Dataset data;
  std::map<std::string, int> text_class;
  std::map<double, int> number_class;
  std::string label_note;
  if (integers && !negative) {
    label_note = "integer labels in '" + label_name + "'";
  } else if (integers) {
    for (const auto& text : label_text) {
      double value = 0;
      formats::parse_csv_number(text, &value);
      number_class.emplace(value, 0);
    }
    int next = 0;
    for (auto& [value, index] : number_class) {
      index = next++;
      data.class_names.push_back(std::to_string(static_cast<long long>(value)));
    }
    label_note = "labels in '" + label_name + "' mapped to classes in numeric order";
  } else {
    for (const auto& text : label_text) text_class.emplace(text, 0);
    int next = 0;
    for (auto& [text, index] : text_class) {
      index = next++;
      data.class_names.push_back(text);
    }
    label_note = "text labels in '" + label_name + "' mapped to classes in sorted order";
  }
  if (!data.class_names.empty()) {
    label_note += " (";
    for (std::size_t i = 0; i < data.class_names.size() && i < 20; ++i) {
      label_note += (i ? ", " : "") + data.class_names[i] + "=" + std::to_string(i);
    }
    if (data.class_names.size() > 20) label_note += ", ...";
    label_note += ")";
  }

  const Selection selection = select(table.row_count(), options, source);
  const std::size_t features = table.column_count() - 1;
  check_budget(selection.count, features, options, source);
  std::string scale_text;
  const float scale = resolve_scale(options, false, scale_text);
  data.sample_shape = {static_cast<std::int64_t>(features)};
  data.x.reserve(selection.count * features);
  for (std::size_t r = selection.first; r < selection.first + selection.count; ++r) {
    for (std::size_t c = 0; c < table.column_count(); ++c) {
      if (c == label_column) continue;
      const std::string_view text = table.field(r, c);
      double value = 0;
      if (!formats::parse_csv_number(text, &value)) {
        const std::string column = table.has_header() ? "'" + table.header()[c] + "'" : std::to_string(c);
        throw core::Error(source + " line " + std::to_string(table.row_line(r)) + ", column " + column + ": '" +
                              std::string(text.substr(0, 40)) + "' is not a number",
                          "feature columns must be numeric: encode or drop text columns first");
      }
      data.x.push_back(static_cast<float>(value) * scale);
    }
    const std::string& text = label_text[r];
    if (integers && !negative) {
      double value = 0;
      formats::parse_csv_number(text, &value);
      data.y.push_back(static_cast<int>(value));
    } else if (integers) {
      double value = 0;
      formats::parse_csv_number(text, &value);
      data.y.push_back(number_class.at(value));
    } else {
      data.y.push_back(text_class.at(text));
    }
  }
  data.description = "table " + source + ": " + selection_text(selection) + " of " + std::to_string(features) + " features, " +
                     label_note + ", " + scale_text;
  finish(data, options, false);
  return data;
}

}  // namespace

std::size_t Dataset::sample_size() const {
  std::size_t size = 1;
  for (auto dim : sample_shape) size *= static_cast<std::size_t>(dim);
  return size;
}

Dataset load_dataset(const std::string& path_text, const DataOptions& options) {
  const fs::path path(path_text);
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    const bool fashion_default = path_text.find("fashion-mnist") != std::string::npos;
    throw core::Error("no data set at " + path_text,
                      fashion_default ? "install the Debian package dataset-fashion-mnist (it provides " + std::string(kFashionMnistDir) + ")"
                                      : "check the path");
  }
  if (fs::is_directory(status)) {
    if (has_idx_files(path)) return load_idx_folder(path, options);
    auto classes = subfolders(path);
    if (!classes.empty()) return load_image_folder(path, std::move(classes), options);
    throw core::Error("no data set found in " + path_text +
                          ": expected t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, train-images-idx3-ubyte.gz and "
                          "train-labels-idx1-ubyte.gz (MNIST or Fashion-MNIST), or one subfolder of PNG/JPEG images per class",
                      "install the Debian package dataset-fashion-mnist and pass " + std::string(kFashionMnistDir) +
                          ", or point at a folder of class subfolders");
  }
  const std::string name = lower(path.filename().string());
  {
    const core::MappedFile file(path_text);
    const auto bytes = file.bytes();
    if (formats::looks_like_npy(bytes)) return load_npy(path, options);
    if (formats::looks_like_zip(bytes) && ends_with(name, ".npz")) return load_npz(path, options);
    if (formats::looks_like_idx(bytes) || formats::looks_like_gzip(bytes)) return load_idx_file(path, options);
  }
  if (ends_with(name, ".csv") || ends_with(name, ".tsv") || ends_with(name, ".txt")) return load_csv(path, options);
  throw core::Error("cannot tell what kind of data set " + path_text + " is",
                    "pass an IDX folder or file (MNIST format), a .npy/.npz array, a .csv table, or a folder of class "
                    "subfolders of images");
}

// ---------------------------------------------------------------------------------------------
// Image grids

std::vector<float> render_perturbation(std::span<const float> originals, std::span<const float> adversarials, std::size_t sample_size,
                                       float lo, float hi) {
  if (originals.size() != adversarials.size() || sample_size == 0 || originals.size() % sample_size != 0) {
    throw core::Error("render_perturbation: originals and adversarials must be the same whole number of samples");
  }
  const float middle = 0.5f * (lo + hi);
  const float half_range = 0.5f * (hi - lo);
  std::vector<float> out(originals.size(), middle);
  for (std::size_t start = 0; start < originals.size(); start += sample_size) {
    float largest = 0;
    for (std::size_t i = start; i < start + sample_size; ++i) {
      const float delta = std::fabs(adversarials[i] - originals[i]);
      if (std::isfinite(delta)) largest = std::max(largest, delta);
    }
    if (largest == 0) continue;
    for (std::size_t i = start; i < start + sample_size; ++i) {
      out[i] = middle + half_range * (adversarials[i] - originals[i]) / largest;
    }
  }
  return out;
}

void write_image_grid(const std::string& png_path, std::span<const std::int64_t> sample_shape,
                      const std::vector<std::span<const float>>& columns, std::size_t rows, float lo, float hi) {
  std::int64_t channels = 1, height = 0, width = 0;
  if (sample_shape.size() == 3) {
    channels = sample_shape[0];
    height = sample_shape[1];
    width = sample_shape[2];
  } else if (sample_shape.size() == 2) {
    height = sample_shape[0];
    width = sample_shape[1];
  }
  if ((channels != 1 && channels != 3) || height <= 0 || width <= 0 || height > 8192 || width > 8192) {
    throw core::Error("cannot draw samples of shape " + shape_text(sample_shape) + " as images",
                      "image grids need samples of {C, H, W} with 1 or 3 channels, or {H, W}");
  }
  if (!(hi > lo)) throw core::Error("the value range of an image grid must have hi > lo");
  if (rows == 0 || columns.empty()) throw core::Error("an image grid needs at least one row and one column");
  const std::size_t sample_size = static_cast<std::size_t>(channels * height * width);
  for (const auto& column : columns) {
    if (column.size() / sample_size < rows) {
      throw core::Error("an image grid column holds " + std::to_string(column.size() / sample_size) + " samples, fewer than the " +
                        std::to_string(rows) + " rows asked for");
    }
  }
  const std::int64_t factor = std::clamp<std::int64_t>(96 / std::max(height, width), 1, 8);
  constexpr std::int64_t kSeparator = 2;
  const std::int64_t cell_h = height * factor, cell_w = width * factor;
  const std::uint64_t grid_w = static_cast<std::uint64_t>(cell_w) * columns.size() + kSeparator * (columns.size() - 1);
  const std::uint64_t grid_h = static_cast<std::uint64_t>(cell_h) * rows + kSeparator * (rows - 1);
  if (grid_w * grid_h > kMaxGridPixels || grid_w > 32767 || grid_h > 32767) {
    throw core::Error("an image grid of " + std::to_string(grid_w) + "x" + std::to_string(grid_h) + " pixels is too large",
                      "draw fewer samples");
  }
  cv::Mat grid(static_cast<int>(grid_h), static_cast<int>(grid_w), channels == 1 ? CV_8UC1 : CV_8UC3, cv::Scalar::all(255));
  const float to_byte = 255.0f / (hi - lo);
  const std::size_t plane = static_cast<std::size_t>(height * width);
  for (std::size_t r = 0; r < rows; ++r) {
    for (std::size_t c = 0; c < columns.size(); ++c) {
      const float* sample = columns[c].data() + r * sample_size;
      const std::int64_t top = static_cast<std::int64_t>(r) * (cell_h + kSeparator);
      const std::int64_t left = static_cast<std::int64_t>(c) * (cell_w + kSeparator);
      for (std::int64_t y = 0; y < cell_h; ++y) {
        std::uint8_t* out = grid.ptr<std::uint8_t>(static_cast<int>(top + y));
        const std::size_t source_row = static_cast<std::size_t>(y / factor) * static_cast<std::size_t>(width);
        for (std::int64_t x = 0; x < cell_w; ++x) {
          const std::size_t at = source_row + static_cast<std::size_t>(x / factor);
          for (std::int64_t ch = 0; ch < channels; ++ch) {
            const float v = (sample[static_cast<std::size_t>(ch) * plane + at] - lo) * to_byte;
            const std::uint8_t byte = std::isnan(v) ? 0 : static_cast<std::uint8_t>(std::lround(std::clamp(v, 0.0f, 255.0f)));
            // CHW in RGB order -> interleaved BGR for OpenCV
            const std::int64_t dest = channels == 1 ? 0 : 2 - ch;
            out[(left + x) * channels + dest] = byte;
          }
        }
      }
    }
  }
  bool written = false;
  try {
    written = cv::imwrite(png_path, grid);
  } catch (const cv::Exception& e) {
    throw core::Error("cannot write " + png_path + ": " + e.what(), "use a .png path in a writable folder");
  }
  if (!written) throw core::Error("cannot write " + png_path, "use a .png path in a writable folder");
}

void write_attack_grid(const std::string& png_path, std::span<const std::int64_t> sample_shape, std::span<const float> originals,
                       std::span<const float> adversarials, std::size_t rows, float lo, float hi) {
  const std::size_t sample_size = static_cast<std::size_t>(shape_product(sample_shape));
  if (sample_size == 0 || originals.size() < rows * sample_size || adversarials.size() < rows * sample_size) {
    throw core::Error("write_attack_grid: fewer samples than rows");
  }
  const auto first_originals = originals.first(rows * sample_size);
  const auto first_adversarials = adversarials.first(rows * sample_size);
  const std::vector<float> perturbation = render_perturbation(first_originals, first_adversarials, sample_size, lo, hi);
  write_image_grid(png_path, sample_shape, {first_originals, std::span<const float>(perturbation), first_adversarials}, rows, lo, hi);
}

}  // namespace aegis::models
