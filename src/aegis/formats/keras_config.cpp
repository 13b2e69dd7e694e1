// Walks a Keras model config the way Keras's deserializers would reach its objects, without
// importing or calling anything: Lambda layers (Keras 2 `function_type`/`function` lists, Keras 3
// "__lambda__" dicts), objects whose `module` / `registered_name` make Keras import code from
// outside Keras, and TFOpLambda layers naming TensorFlow functions that reach files or Python.
// The JSON parser is bounded (depth, size) and the walk is bounded (layers, nodes, issues).
#include "aegis/formats/keras_config.h"

#include "aegis/core/base64.h"
#include "aegis/core/text.h"

#include <algorithm>
#include <array>
#include <exception>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "aegis/formats/pymarshal.h"

namespace aegis::formats {
namespace {

using json = nlohmann::json;
using core::Severity;

constexpr int kMaxJsonDepth = 128;
constexpr std::size_t kMaxJsonBytes = std::size_t{64} << 20;
constexpr std::size_t kMaxLayers = 100000;
constexpr std::size_t kMaxNodes = 4000000;
constexpr std::size_t kMaxCollected = kMaxIssuesPerFile * 4;  // issues kept before sorting and capping
constexpr int kMaxEmbeddedDocs = 2;  // JSON strings inside the JSON (e.g. "model_config") parsed in turn
constexpr std::size_t kMaxEvidence = 1500;

constexpr std::string_view kRemediationLambda =
    "Do not load this model unless you trust whoever produced it: Keras turns this bytecode back into a "
    "Python function when the model is loaded with safe_mode=False (and always in Keras before 2.13), and "
    "runs it when the model is called. Re-create the layer as a registered Layer subclass from reviewed "
    "source.";
constexpr std::string_view kRemediationModule =
    "Loading this model imports the named module and uses the named object from it. Load it only if that "
    "package is installed from a source you trust and you have reviewed the object; otherwise remove the "
    "reference from the config.";
constexpr std::string_view kRemediationTfOp =
    "This TensorFlow function runs whenever the model is called. Check its arguments (file paths, Python "
    "callbacks) and remove the layer unless the model's author explains it.";

// Modules whose objects run code, touch files or the network, or load further data when used:
// the module-wide entries of data/scan/pickle_denylist.txt that a Keras config could name.
constexpr std::array<std::string_view, 79> kDangerousModules = {
    "__builtin__", "__builtins__", "_ctypes", "_frozen_importlib", "_frozen_importlib_external", "_imp", "_io",
    "_operator", "_pickle", "_posixsubprocess", "_thread", "aiohttp", "asyncio", "bdb", "builtins", "cPickle",
    "cProfile", "cloudpickle", "code", "codeop", "commands", "compileall", "ctypes", "dill", "distutils",
    "ensurepip", "fileinput", "ftplib", "functools", "glob", "http", "httplib", "imaplib", "imp", "importlib",
    "inspect", "io", "joblib", "linecache", "logging.config", "marshal", "mmap", "multiprocessing", "nt",
    "numpy.distutils", "numpy.f2py", "numpy.lib.npyio", "numpy.testing._private.utils", "operator", "os",
    "pathlib", "pdb", "pexpect", "pickle", "pip", "pkgutil", "posix", "pty", "py_compile", "pydoc", "runpy",
    "setuptools", "shelve", "shutil", "signal", "site", "smtplib", "socket", "subprocess", "sys", "tarfile",
    "telnetlib", "tempfile", "timeit", "torch.hub", "types", "urllib", "webbrowser", "zipimport",
};

// Python builtins that run code, reach attributes or files, or read input.
constexpr std::array<std::string_view, 22> kDangerousBuiltins = {
    "__import__", "breakpoint", "compile", "delattr", "eval", "exec", "execfile", "exit", "file", "getattr",
    "globals", "help", "input", "locals", "memoryview", "open", "print", "quit", "reload", "setattr", "vars",
    "__loader__",
};

// Packages whose modules Keras itself provides.
constexpr std::array<std::string_view, 9> kKerasPackages = {
    "keras", "keras_nlp", "keras_hub", "keras_cv", "keras_core", "tf_keras", "tensorflow.keras",
    "tensorflow.python.keras", "tensorflow.compat.v2.keras",
};

bool in_package(std::string_view module, std::string_view package) {
  return module == package ||
         (module.size() > package.size() && module.substr(0, package.size()) == package && module[package.size()] == '.');
}

template <std::size_t N>
bool in_any_package(std::string_view module, const std::array<std::string_view, N>& packages) {
  return std::any_of(packages.begin(), packages.end(), [&](std::string_view p) { return in_package(module, p); });
}

template <std::size_t N>
bool contains(const std::array<std::string_view, N>& list, std::string_view item) {
  return std::find(list.begin(), list.end(), item) != list.end();
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// Grades a TensorFlow API symbol as TFOpLambda stores it ("io.read_file", "compat.v1.py_func").
struct TfRisk {
  Severity severity = Severity::High;
  std::string_view reason;
};

std::optional<TfRisk> tf_symbol_risk(std::string_view symbol) {
  if (starts_with(symbol, "tf.")) symbol.remove_prefix(3);
  std::string_view bare = symbol;  // without compat.v1. / compat.v2.
  if (starts_with(bare, "compat.v1.") || starts_with(bare, "compat.v2.")) bare.remove_prefix(10);
  static constexpr std::array<std::string_view, 8> kPython = {
      "py_function", "numpy_function", "py_func", "eager_py_func", "raw_ops.PyFunc", "raw_ops.PyFuncStateless",
      "raw_ops.EagerPyFunc", "script_ops.py_func",
  };
  static constexpr std::array<std::string_view, 4> kLibraries = {
      "load_op_library", "load_library", "load_file_system_library", "experimental.load_op_library",
  };
  static constexpr std::array<std::string_view, 5> kWrites = {
      "io.write_file", "write_file", "raw_ops.WriteFile", "io.write_graph", "train.write_graph",
  };
  static constexpr std::array<std::string_view, 8> kReads = {
      "io.read_file", "read_file", "raw_ops.ReadFile", "io.matching_files", "matching_files",
      "raw_ops.MatchingFiles", "data.TextLineDataset", "data.TFRecordDataset",
  };
  static constexpr std::array<std::string_view, 14> kGfileWrites = {
      "GFile", "Open", "FastGFile", "copy", "Copy", "makedirs", "MakeDirs", "mkdir", "MkDir", "remove", "Remove",
      "rename", "Rename", "rmtree",
  };
  if (contains(kPython, bare)) return TfRisk{Severity::Critical, "runs a Python function"};
  if (contains(kLibraries, bare)) return TfRisk{Severity::Critical, "loads a native library"};
  if (contains(kWrites, bare)) return TfRisk{Severity::Critical, "writes a file"};
  if (starts_with(bare, "io.gfile.") || starts_with(bare, "gfile.")) {
    const std::string_view op = bare.substr(bare.rfind('.') + 1);
    if (contains(kGfileWrites, op) || op == "DeleteRecursively")
      return TfRisk{Severity::Critical, "opens, writes or deletes files"};
    return TfRisk{Severity::High, "reads or lists the file system"};
  }
  if (contains(kReads, bare)) return TfRisk{Severity::High, "reads or lists files"};
  if (bare == "print" || bare == "Print" || bare == "raw_ops.PrintV2")
    return TfRisk{Severity::High, "prints tensors, and writes to a file when given a file:// output stream"};
  if (starts_with(bare, "summary.") || bare == "debugging.experimental.enable_dump_debug_info")
    return TfRisk{Severity::High, "writes summary or debug files"};
  return std::nullopt;
}

const json* member(const json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  const auto it = object.find(std::string(key));
  return it == object.end() ? nullptr : &*it;
}

std::string string_member(const json& object, std::string_view key) {
  const json* value = member(object, key);
  return value != nullptr && value->is_string() ? value->get<std::string>() : std::string();
}

// JSON text of a value, cut to `max` bytes (never inside a UTF-8 sequence).
std::string brief(const json& value, std::size_t max = 200) {
  std::string text = value.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > max) {
    std::size_t cut = max;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    text.resize(cut);
    text += "...";
  }
  return text;
}

std::string quote_text(std::string_view s, std::size_t max = 120) { return "'" + core::printable(s, max) + "'"; }

// Python's json module writes NaN, Infinity and -Infinity, which strict JSON rejects. Replaces
// them outside strings by null; nullopt when there are none.
std::optional<std::string> replace_python_constants(std::string_view text) {
  std::string out;
  bool changed = false;
  bool in_string = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\' && i + 1 < text.size()) {
        if (changed) out += text.substr(i, 2);
        ++i;
        continue;
      }
      if (c == '"') in_string = false;
      if (changed) out += c;
      continue;
    }
    std::size_t skip = 0;
    if (c == 'N' && text.substr(i, 3) == "NaN") skip = 3;
    if (c == 'I' && text.substr(i, 8) == "Infinity") skip = 8;
    if (c == '-' && text.substr(i, 9) == "-Infinity") skip = 9;
    if (skip > 0) {
      if (!changed) {
        out.assign(text.substr(0, i));
        changed = true;
      }
      out += "null";
      i += skip - 1;
      continue;
    }
    if (c == '"') in_string = true;
    if (changed) out += c;
  }
  if (!changed) return std::nullopt;
  return out;
}

// First pass: only checks nesting depth and syntax, with nlohmann's iterative SAX reader (the
// DOM parser's callback mode is slow on long arrays, so depth is not checked there).
class DepthCheck {
 public:
  using number_integer_t = json::number_integer_t;
  using number_unsigned_t = json::number_unsigned_t;
  using number_float_t = json::number_float_t;
  using string_t = json::string_t;
  using binary_t = json::binary_t;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(number_integer_t) { return true; }
  bool number_unsigned(number_unsigned_t) { return true; }
  bool number_float(number_float_t, const string_t&) { return true; }
  bool string(string_t&) { return true; }
  bool binary(binary_t&) { return true; }
  bool key(string_t&) { return true; }
  bool start_object(std::size_t) { return enter(); }
  bool end_object() { return leave(); }
  bool start_array(std::size_t) { return enter(); }
  bool end_array() { return leave(); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    error = e.what();
    return false;
  }

  std::string error;

 private:
  bool enter() {
    if (++depth_ > kMaxJsonDepth) {
      error = "JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels";
      return false;
    }
    return true;
  }
  bool leave() {
    --depth_;
    return true;
  }
  int depth_ = 0;
};

// Parses with nesting capped at kMaxJsonDepth; nullopt and `error` on failure.
std::optional<json> parse_bounded(std::string_view text, std::string& error) {
  if (text.size() > kMaxJsonBytes) {
    error = "config of " + std::to_string(text.size()) + " bytes exceeds the " + std::to_string(kMaxJsonBytes >> 20) +
            " MiB limit";
    return std::nullopt;
  }
  const std::optional<std::string> cleaned = replace_python_constants(text);
  const std::string_view input = cleaned ? std::string_view(*cleaned) : text;
  try {
    DepthCheck check;
    if (!json::sax_parse(input.begin(), input.end(), &check, json::input_format_t::json, true, false)) {
      error = check.error.empty() ? "not valid JSON" : check.error;
      return std::nullopt;
    }
    return json::parse(input.begin(), input.end(), nullptr, true, false);
  } catch (const json::exception& e) {
    error = e.what();
  } catch (const std::exception& e) {
    error = std::string("JSON parser failed: ") + e.what();
  }
  return std::nullopt;
}

// The bytes that Keras's func_load would hand to marshal.loads: base64 through Python's lenient
// codec (characters outside the alphabet skipped), or when that fails the raw_unicode_escape
// encoding of the string itself.
struct LoaderBytes {
  std::vector<std::uint8_t> bytes;
  std::string how;
};

std::optional<std::vector<std::uint8_t>> lenient_base64(std::string_view text) {
  std::vector<std::uint8_t> out;
  int quad_pos = 0;
  int pads = 0;
  std::uint32_t left = 0;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '=') {
      if (quad_pos >= 2 && quad_pos + ++pads >= 4) return out;  // the padding ends the data
      continue;
    }
    int value = core::base64_digit_value(c);
    if (value < 0) continue;
    pads = 0;
    const auto v = static_cast<std::uint32_t>(value);
    switch (quad_pos) {
      case 0: left = v, quad_pos = 1; break;
      case 1: out.push_back(static_cast<std::uint8_t>((left << 2) | (v >> 4))), left = v & 0x0F, quad_pos = 2; break;
      case 2: out.push_back(static_cast<std::uint8_t>((left << 4) | (v >> 2))), left = v & 0x03, quad_pos = 3; break;
      default: out.push_back(static_cast<std::uint8_t>((left << 6) | v)), left = 0, quad_pos = 0; break;
    }
  }
  if (quad_pos != 0) return std::nullopt;
  return out;
}

LoaderBytes loader_bytes(std::string_view code) {
  const bool ascii = std::all_of(code.begin(), code.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; });
  if (ascii) {
    if (auto strict = decode_base64(code)) return {std::move(*strict), "base64"};
    if (auto lenient = lenient_base64(code))
      return {std::move(*lenient), "base64 with characters outside the alphabet (Python's codec skips them)"};
    return {std::vector<std::uint8_t>(code.begin(), code.end()), "not base64: the string's own bytes (raw_unicode_escape)"};
  }
  // raw_unicode_escape: code points below 256 as one byte, others as \uXXXX / \UXXXXXXXX.
  LoaderBytes out{{}, "not base64: the string's code points (raw_unicode_escape)"};
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::size_t i = 0; i < code.size();) {
    const auto c = static_cast<unsigned char>(code[i]);
    std::uint32_t cp = c;
    std::size_t len = 1;
    if (c >= 0xF0 && i + 3 < code.size()) {
      cp = ((c & 0x07u) << 18) | ((code[i + 1] & 0x3Fu) << 12) | ((code[i + 2] & 0x3Fu) << 6) | (code[i + 3] & 0x3Fu);
      len = 4;
    } else if (c >= 0xE0 && i + 2 < code.size()) {
      cp = ((c & 0x0Fu) << 12) | ((code[i + 1] & 0x3Fu) << 6) | (code[i + 2] & 0x3Fu);
      len = 3;
    } else if (c >= 0xC0 && i + 1 < code.size()) {
      cp = ((c & 0x1Fu) << 6) | (code[i + 1] & 0x3Fu);
      len = 2;
    }
    i += len;
    if (cp < 0x100) {
      out.bytes.push_back(static_cast<std::uint8_t>(cp));
    } else {
      const int digits = cp > 0xFFFF ? 8 : 4;
      out.bytes.push_back('\\');
      out.bytes.push_back(digits == 8 ? 'U' : 'u');
      for (int k = digits - 1; k >= 0; --k) out.bytes.push_back(static_cast<std::uint8_t>(kHex[(cp >> (4 * k)) & 0xF]));
    }
  }
  return out;
}

// Names used by a code object and the code nested in it, without repeats.
void collect_names(const MarshalCode& code, std::vector<std::string>& out, int depth) {
  for (const std::string& name : code.names)
    if (std::find(out.begin(), out.end(), name) == out.end()) out.push_back(name);
  if (depth < 16)
    for (const MarshalCode& inner : code.nested) collect_names(inner, out, depth + 1);
}

// The Keras object a value sits in, for titles: "Lambda layer 'lambda_1'".
struct Owner {
  std::string class_name;
  std::string name;
  bool is_layer = false;
};

std::string describe_owner(const Owner* owner) {
  if (owner == nullptr) return "Config";
  std::string out = owner->class_name.empty() ? std::string("object") : owner->class_name;
  if (owner->is_layer) out += " layer";
  if (!owner->name.empty()) out += " " + quote_text(owner->name, 80);
  return out;
}

bool is_model_class(std::string_view class_name) {
  return class_name == "Sequential" || class_name == "Functional" || class_name == "Model";
}

class Reviewer {
 public:
  Reviewer(std::string_view origin, KerasReview& out) : origin_(origin), out_(out) {}

  void review_document(const json& root, int embedded) {
    if (!root.is_object()) {
      if (root.is_array()) visit_member("", root, 0, nullptr, embedded);
      return;
    }
    if (embedded == 0) {
      out_.keras_version = string_member(root, "keras_version");
      out_.backend = string_member(root, "backend");
    }
    const std::string class_name = string_member(root, "class_name");
    if (class_name.empty()) {
      visit_object(root, 0, nullptr, false, embedded);
      return;
    }
    const bool model = is_model_class(class_name) || has_layers(root);
    const std::string name = object_name(root);
    std::string label = model ? "model" : "layer";
    if (!name.empty()) label += " " + quote_text(name, 80);
    if (!model) count_layer(class_name);
    path_.push_back(label);
    visit_object(root, 0, nullptr, !model, embedded);
    path_.pop_back();
  }

  void add(FormatIssue issue) {
    if (collected_ >= kMaxCollected) {
      dropped_ = true;
      return;
    }
    for (const FormatIssue& seen : out_.issues)
      if (seen.rule == issue.rule && seen.title == issue.title && seen.where == issue.where) return;
    if (issue.evidence.size() > kMaxEvidence) {
      std::size_t cut = kMaxEvidence;
      while (cut > 0 && (static_cast<unsigned char>(issue.evidence[cut]) & 0xC0) == 0x80) --cut;
      issue.evidence.resize(cut);
      issue.evidence += "...";
    }
    ++collected_;
    out_.issues.push_back(std::move(issue));
  }

  void add_unreadable(const std::string& error) {
    FormatIssue issue;
    issue.rule = "keras.config-unreadable";
    issue.severity = Severity::Medium;
    issue.kind = IssueClass::Container;
    issue.title = "Keras config (" + std::string(origin_) + ") is not readable JSON";
    issue.evidence = error;
    issue.where = where();
    issue.remediation =
        "Keras cannot load this config either; if the file should be a model, re-export it from a trusted source.";
    add(std::move(issue));
  }

  bool dropped() const { return dropped_; }
  bool stopped() const { return stopped_; }
  const std::string& stop_reason() const { return stop_reason_; }

 private:
  static bool has_layers(const json& object) {
    const json* config = member(object, "config");
    return config != nullptr && (config->is_array() || (member(*config, "layers") != nullptr && (*config)["layers"].is_array()));
  }

  static std::string object_name(const json& object) {
    if (const json* config = member(object, "config"); config != nullptr) {
      std::string name = string_member(*config, "name");
      if (!name.empty()) return name;
    }
    return string_member(object, "name");
  }

  std::string where() const {
    std::string out;
    for (const std::string& segment : path_) {
      if (segment.empty()) continue;
      if (!out.empty()) out += " > ";
      out += segment;
    }
    return out;
  }

  void count_layer(const std::string& class_name) {
    ++out_.layers;
    if (out_.layers > kMaxLayers) stop("more than " + std::to_string(kMaxLayers) + " layers");
    if (!class_name.empty() && seen_classes_.size() < 10000 && seen_classes_.insert(class_name).second)
      out_.layer_classes.push_back(class_name);
  }

  void stop(std::string reason) {
    if (stopped_) return;
    stopped_ = true;
    stop_reason_ = std::move(reason);
  }

  bool budget() {
    if (stopped_) return false;
    if (++nodes_ > kMaxNodes) {
      stop("more than " + std::to_string(kMaxNodes) + " JSON values");
      return false;
    }
    return true;
  }

  // One member value reached under `label` (its key, "layers[3] 'dense'", ...).
  void visit_member(const std::string& label, const json& value, int depth, const Owner* owner, int embedded,
                    bool layer_slot = false) {
    if (!budget()) return;
    if (value.is_object()) {
      const std::string class_name = string_member(value, "class_name");
      std::string segment = label;
      if (!class_name.empty() && !layer_slot) {
        const std::string name = object_name(value);
        if (!name.empty() && label.find('\'') == std::string::npos) segment += " " + quote_text(name, 80);
      }
      path_.push_back(segment);
      visit_object(value, depth + 1, owner, layer_slot, embedded);
      path_.pop_back();
    } else if (value.is_array()) {
      // Numbers, strings and nulls inside arrays (shapes, vocabularies, constants) hold nothing to review.
      for (std::size_t i = 0; i < value.size() && !stopped_; ++i)
        if (value[i].is_structured()) visit_member(label + "[" + std::to_string(i) + "]", value[i], depth + 1, owner, embedded);
    } else if (value.is_string() && embedded < kMaxEmbeddedDocs &&
               (label == "model_config" || label == "training_config")) {
      const std::string& text = value.get_ref<const std::string&>();
      if (text.empty() || text.front() != '{') return;
      std::string error;
      std::optional<json> inner = parse_bounded(text, error);
      path_.push_back(label);
      if (inner) {
        review_document(*inner, embedded + 1);
      } else {
        add_unreadable(error);
      }
      path_.pop_back();
    }
  }

  // An object: a Keras object when it has "class_name", any other dict otherwise.
  void visit_object(const json& object, int depth, const Owner* parent, bool is_layer, int embedded) {
    const std::string class_name = string_member(object, "class_name");
    Owner self;
    const Owner* owner = parent;
    if (!class_name.empty()) {
      self.class_name = class_name;
      self.name = object_name(object);
      self.is_layer = is_layer;
      owner = &self;
      check_object(object, class_name, parent, self);
    }
    for (const auto& [key, value] : object.items()) {
      if (stopped_) return;
      if (!class_name.empty() && key == "config") {
        visit_config(value, depth, owner, embedded, class_name);
      } else {
        visit_member(key, value, depth, owner, embedded);
      }
    }
  }

  // The "config" of a Keras object: its members appear in `where` without a "config" segment,
  // and its "layers" are layers.
  void visit_config(const json& config, int depth, const Owner* owner, int embedded, const std::string& class_name) {
    if (!budget()) return;
    if (config.is_array() && class_name == "Sequential") {  // Keras < 2.2.3: the config is the layer list
      visit_layers(config, depth, owner, embedded);
      return;
    }
    if (!config.is_object()) {
      visit_member("config", config, depth, owner, embedded);
      return;
    }
    for (const auto& [key, value] : config.items()) {
      if (stopped_) return;
      if (key == "layers" && value.is_array()) {
        visit_layers(value, depth, owner, embedded);
      } else {
        visit_member(key, value, depth, owner, embedded);
      }
    }
  }

  void visit_layers(const json& layers, int depth, const Owner* owner, int embedded) {
    for (std::size_t i = 0; i < layers.size() && !stopped_; ++i) {
      const json& layer = layers[i];
      std::string label = "layers[" + std::to_string(i) + "]";
      const std::string class_name = string_member(layer, "class_name");
      if (layer.is_object() && !class_name.empty()) {
        const std::string name = object_name(layer);
        if (!name.empty()) label += " " + quote_text(name, 80);
        count_layer(class_name);
        visit_member(label, layer, depth + 1, owner, embedded, true);
      } else {
        visit_member(label, layer, depth + 1, owner, embedded);
      }
    }
  }

  // ---- checks on one Keras object ----

  void check_object(const json& object, const std::string& class_name, const Owner* parent, const Owner& self) {
    if (class_name == "__lambda__") {
      check_lambda_object(object, parent);
      return;
    }
    const json* config = member(object, "config");
    if (class_name == "Lambda" && config != nullptr && config->is_object()) check_keras2_lambda(*config, self);
    if ((class_name == "TFOpLambda" || class_name == "SlicingOpLambda") && config != nullptr)
      check_tf_op(object, string_member(*config, "function"), self);
    if (class_name == "ClassMethod" && config != nullptr) {
      const std::string symbol = string_member(*config, "cls_symbol");
      const std::string method = string_member(*config, "method_name");
      if (!symbol.empty()) check_tf_op(object, method.empty() ? symbol : symbol + "." + method, self);
    }
    check_module(object, class_name, parent, self);
  }

  // Describes marshalled code given as Keras stores it; fills title suffix and evidence.
  void describe_code(const std::string& code_text, std::string& title_tail, std::string& evidence) {
    if (++decoded_ > 2000) {
      title_tail = "stores Python bytecode";
      evidence += "; bytecode not decoded (too many Lambda functions in one config)";
      return;
    }
    const LoaderBytes raw = loader_bytes(code_text);
    const MarshalResult code = read_marshalled_code(raw.bytes);
    evidence += "; " + raw.how + " -> " + std::to_string(raw.bytes.size()) + " bytes of marshal data";
    if (!code.ok) {
      title_tail = "stores Python bytecode that could not be read";
      evidence += "; not readable as marshal data: " + code.error;
      return;
    }
    if (!code.code) {
      title_tail = "stores marshal data that is not a code object";
      evidence += "; marshal data holds a " + code.top_level + ", not a code object";
      return;
    }
    evidence += " (Python " + code.python_family + " layout";
    if (code.trailing_bytes > 0) evidence += ", " + std::to_string(code.trailing_bytes) + " bytes after it";
    evidence += "): " + summarize_code(*code.code, 900);
    std::vector<std::string> names;
    collect_names(*code.code, names, 0);
    if (names.empty()) {
      title_tail = "stores Python bytecode";
      return;
    }
    title_tail = "stores Python bytecode that uses ";
    for (std::size_t i = 0; i < names.size() && i < 8; ++i) {
      if (i > 0) title_tail += ", ";
      title_tail += names[i].substr(0, 60);
    }
    if (names.size() > 8) title_tail += ", ...";
  }

  void add_lambda(const std::string& title, const std::string& evidence, Severity severity) {
    FormatIssue issue;
    issue.rule = "keras.lambda-layer";
    issue.severity = severity;
    issue.kind = IssueClass::Code;
    issue.title = title;
    issue.evidence = evidence;
    issue.where = where();
    issue.remediation = std::string(kRemediationLambda);
    add(std::move(issue));
  }

  // Keras 3: {"class_name": "__lambda__", "config": {"code": ..., "defaults": ..., "closure": ...}}
  // (Lambda layers) or {"config": {"value": [code, defaults, closure]}} (serialize_keras_object).
  void check_lambda_object(const json& object, const Owner* parent) {
    const std::string key = path_.empty() ? std::string() : path_.back();
    std::string subject = describe_owner(parent);
    if (!key.empty() && key.find('\'') == std::string::npos && !(parent != nullptr && key == "function"))
      subject += " (" + key + ")";
    std::string evidence = "Keras 3 \"__lambda__\" object";
    std::string code_text;
    bool found = false;
    if (const json* config = member(object, "config"); config != nullptr) {
      const json* code = member(*config, "code");
      if (code == nullptr) code = member(*config, "value");
      if (code != nullptr && code->is_array() && !code->empty()) code = &(*code)[0];
      if (code != nullptr && code->is_string()) {
        code_text = code->get<std::string>();
        found = true;
      }
      if (const json* closure = member(*config, "closure"); closure != nullptr && !closure->is_null())
        evidence += "; closure " + brief(*closure, 120);
      if (const json* defaults = member(*config, "defaults"); defaults != nullptr && !defaults->is_null())
        evidence += "; defaults " + brief(*defaults, 120);
    }
    std::string tail = "stores a Python lambda whose code is missing";
    if (found) {
      describe_code(code_text, tail, evidence);
    } else {
      evidence += "; no \"code\" or \"value\" string: " + brief(object);
    }
    add_lambda(subject + " " + tail, evidence, Severity::Critical);
  }

  // Keras 2 (tf.keras, keras_metadata.pb): "function" + "function_type" ("lambda", "function",
  // "raw") + "module", and the same triples for "output_shape" and "mask".
  void check_keras2_lambda(const json& config, const Owner& self) {
    struct Slot {
      std::string_view value, type, module;
    };
    static constexpr std::array<Slot, 3> kSlots = {{
        {"function", "function_type", "module"},
        {"output_shape", "output_shape_type", "output_shape_module"},
        {"mask", "mask_type", "mask_module"},
    }};
    for (const Slot& slot : kSlots) {
      const json* value = member(config, slot.value);
      if (value == nullptr) continue;
      const std::string type = string_member(config, slot.type);
      const std::string module = string_member(config, slot.module);
      const std::string subject =
          describe_owner(&self) + (slot.value == "function" ? std::string() : " (" + std::string(slot.value) + ")");
      if (type == "lambda" && value->is_object() && string_member(*value, "class_name") == "__lambda__") {
        continue;  // a Keras 3 "__lambda__" object: reported when the walk reaches it
      }
      if (type == "lambda") {
        std::string evidence = std::string(slot.type) + " \"lambda\"";
        if (!module.empty()) evidence += ", " + std::string(slot.module) + " " + quote_text(module);
        if (!module.empty() && in_any_package(module, kDangerousModules))
          evidence += " (its globals are given to the code when loaded)";
        const json* code = value;
        if (code->is_array() && !code->empty()) code = &(*code)[0];
        std::string tail = "stores a Python lambda whose code is missing";
        if (code->is_string()) {
          describe_code(code->get<std::string>(), tail, evidence);
        } else {
          evidence += "; " + std::string(slot.value) + " is " + brief(*value);
        }
        path_.push_back(std::string(slot.value));
        add_lambda(subject + " " + tail, evidence, Severity::Critical);
        path_.pop_back();
      } else if (slot.value == "function" && value->is_string() &&
                 (type == "function" || type == "raw" || type.empty())) {
        const std::string name = value->get<std::string>();
        const std::string full = module.empty() || module == "__main__" ? name : module + "." + name;
        const bool dangerous = !module.empty() && in_any_package(module, kDangerousModules);
        std::string evidence = "function_type " + (type.empty() ? std::string("(none)") : quote_text(type)) + ", function " +
                               quote_text(name) + (module.empty() ? std::string() : ", module " + quote_text(module));
        evidence += "; Keras resolves the name among registered custom objects when the model is loaded";
        path_.push_back("function");
        add_lambda(subject + " calls the Python function " + quote_text(full), evidence,
                   dangerous ? Severity::Critical : Severity::High);
        path_.pop_back();
      }
    }
  }

  void check_tf_op(const json& object, const std::string& symbol, const Owner& self) {
    if (symbol.empty()) return;
    const std::optional<TfRisk> risk = tf_symbol_risk(symbol);
    if (!risk) return;
    FormatIssue issue;
    issue.rule = "keras.tfoplambda";
    issue.severity = risk->severity;
    issue.kind = IssueClass::Code;
    issue.title = describe_owner(&self) + " calls tf." + symbol.substr(0, 120) + ", which " + std::string(risk->reason);
    issue.evidence = "function " + quote_text(symbol);
    if (const json* nodes = member(object, "inbound_nodes"); nodes != nullptr && !nodes->empty())
      issue.evidence += "; inbound_nodes (arguments) " + brief(*nodes, 400);
    issue.where = where();
    issue.remediation = std::string(kRemediationTfOp);
    add(std::move(issue));
  }

  // "module", "registered_name" and Keras 2 "package>name" class names pointing outside Keras.
  void check_module(const json& object, const std::string& class_name, const Owner* parent, const Owner& self) {
    const std::string module = string_member(object, "module");
    const std::string registered = string_member(object, "registered_name");
    const bool is_function = class_name == "function";
    const json* config = member(object, "config");
    const std::string fn_name = is_function && config != nullptr && config->is_string() ? config->get<std::string>() : "";
    const std::string target = is_function ? fn_name : class_name;

    std::optional<Severity> severity;
    std::vector<std::string> reasons;
    auto raise = [&](Severity s, std::string why) {
      if (!severity || static_cast<int>(s) > static_cast<int>(*severity)) severity = s;
      reasons.push_back(std::move(why));
    };

    if (!module.empty() && !in_any_package(module, kKerasPackages)) {
      if (module == "builtins" || module == "__builtin__") {
        if (contains(kDangerousBuiltins, target))
          raise(Severity::Critical, "module " + quote_text(module) + " with " + quote_text(target) + " resolves to Python's " +
                                        target + " builtin");
        // Other names under "builtins" are Keras's own built-in functions ("relu", "mse").
      } else if (in_any_package(module, kDangerousModules)) {
        raise(Severity::Critical, "module " + quote_text(module) + " runs commands, code or file and network access");
      } else if (in_package(module, "tensorflow") || in_package(module, "numpy")) {
        if (class_name == "__typespec__") {
          // TensorFlow's own TypeSpec classes, recorded by Keras for tf.data and composite tensors.
        } else if (const std::optional<TfRisk> risk = tf_symbol_risk(target); risk && in_package(module, "tensorflow")) {
          raise(risk->severity, "module " + quote_text(module) + " with " + quote_text(target) + ", which " + std::string(risk->reason));
        } else {
          raise(Severity::Medium, "module " + quote_text(module) + " is part of TensorFlow/NumPy but outside Keras");
        }
      } else {
        raise(Severity::High, "module " + quote_text(module) + " is outside Keras and is imported when the model is loaded");
      }
    }
    auto check_package = [&](const std::string& name, std::string_view field) {
      const std::size_t sep = name.find('>');
      if (sep == std::string::npos) return;
      const std::string package = name.substr(0, sep);
      if (in_any_package(package, kKerasPackages)) return;
      raise(Severity::High, std::string(field) + " " + quote_text(name) + " is a custom object registered by package " +
                                quote_text(package));
    };
    check_package(registered, "registered_name");
    if (registered != class_name) check_package(class_name, "class_name");
    if (!severity) return;

    FormatIssue issue;
    issue.rule = "keras.module-outside-keras";
    issue.severity = *severity;
    issue.kind = IssueClass::Code;
    if (is_function) {
      issue.title = describe_owner(parent) + " refers to the function " +
                    quote_text(module.empty() ? fn_name : module + "." + fn_name);
    } else {
      issue.title = "Custom class " + quote_text(class_name, 80);
      const std::string key = path_.empty() ? std::string() : path_.back();
      if (self.is_layer) {
        issue.title += self.name.empty() ? std::string(" (a layer)") : " (layer " + quote_text(self.name, 80) + ")";
      } else if (!key.empty()) {
        issue.title += " (" + key + ")";
      }
      if (!module.empty()) {
        issue.title += " is imported from module " + quote_text(module);
      } else {
        issue.title += " is registered as " + quote_text(registered.empty() ? class_name : registered);
      }
    }
    issue.evidence = "class_name " + quote_text(class_name);
    if (!module.empty()) issue.evidence += ", module " + quote_text(module);
    if (!registered.empty()) issue.evidence += ", registered_name " + quote_text(registered);
    if (is_function) issue.evidence += ", config " + quote_text(fn_name);
    for (const std::string& reason : reasons) issue.evidence += "; " + reason;
    issue.where = where();
    issue.remediation = std::string(kRemediationModule);
    add(std::move(issue));
  }

  std::string_view origin_;
  KerasReview& out_;
  std::vector<std::string> path_;
  std::set<std::string> seen_classes_;
  std::size_t nodes_ = 0;
  std::size_t collected_ = 0;
  std::size_t decoded_ = 0;
  bool dropped_ = false;
  bool stopped_ = false;
  std::string stop_reason_;
};

FormatIssue limit_issue(std::string title, std::string evidence) {
  FormatIssue issue;
  issue.rule = "keras.config-limit";
  issue.severity = Severity::Medium;
  issue.kind = IssueClass::Container;
  issue.title = std::move(title);
  issue.evidence = std::move(evidence);
  issue.remediation = "Review the rest of this config by other means before loading the model.";
  return issue;
}

}  // namespace

KerasReview review_keras_config(std::string_view json_text, std::string_view origin) {
  KerasReview review;
  try {
    std::string error;
    const std::optional<json> root = parse_bounded(json_text, error);
    Reviewer reviewer(origin, review);
    if (!root) {
      reviewer.add_unreadable(error);
      return review;
    }
    reviewer.review_document(*root, 0);

    std::stable_sort(review.issues.begin(), review.issues.end(), [](const FormatIssue& a, const FormatIssue& b) {
      return static_cast<int>(a.severity) > static_cast<int>(b.severity);
    });
    const bool too_many = review.issues.size() > kMaxIssuesPerFile - 2 || reviewer.dropped();
    if (too_many) {
      const std::size_t total = review.issues.size();
      review.issues.resize(std::min(review.issues.size(), kMaxIssuesPerFile - 2));
      review.issues.push_back(limit_issue("Keras config has more findings than are listed",
                                          "listed the " + std::to_string(review.issues.size()) + " most severe of " +
                                              std::to_string(total) + (reviewer.dropped() ? "+" : "") + " findings"));
    }
    if (reviewer.stopped())
      review.issues.push_back(limit_issue("Keras config review stopped early (" + std::string(origin) + ")",
                                          "stopped after " + reviewer.stop_reason() + "; later layers were not reviewed"));
  } catch (const std::exception& e) {  // allocation failure: report, never throw
    FormatIssue issue;
    issue.rule = "keras.config-unreadable";
    issue.severity = Severity::Medium;
    issue.kind = IssueClass::Container;
    issue.title = "Keras config (" + std::string(origin) + ") could not be reviewed";
    issue.evidence = e.what();
    review.issues.push_back(std::move(issue));
  }
  return review;
}

}  // namespace aegis::formats
