// Reads TensorFlow protobuf files into Aegis' subset of TensorFlow's messages and reviews their
// ops. Before protobuf parses anything, a walk over the wire format estimates what the parsed
// message would allocate (hostile files can pack millions of empty messages into a few bytes),
// so that a file is parsed only when it fits the memory budget. Nothing read here is executed:
// op names are looked up in a table, constants are only quoted.
#include "aegis/formats/tf_graph.h"

#include "aegis/core/text.h"
#include "aegis/formats/protobuf_wire.h"

#include <algorithm>
#include <array>
#include <climits>
#include <exception>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <google/protobuf/descriptor.h>
#include <google/protobuf/descriptor.pb.h>
#include <google/protobuf/message.h>

#include "tensorflow_subset.pb.h"

namespace aegis::formats {
namespace {

using core::Severity;
namespace pb = google::protobuf;

constexpr std::size_t kMaxNodes = 2'000'000;      // counted over the graph and every function
constexpr std::size_t kMaxFunctions = 100'000;    // FunctionDefs over all meta graphs
constexpr std::uint64_t kMaxParseBytes = INT_MAX;  // protobuf parses at most 2 GiB - 1
constexpr std::uint64_t kMaxHeapOverhead = std::uint64_t{1} << 30;  // estimated, beyond the bytes read
constexpr int kMaxProtoDepth = 100;                // protobuf's default recursion limit
constexpr std::size_t kMaxKerasJsonCount = 100'000;
constexpr std::uint64_t kMaxKerasJsonBytes = 64u << 20;
constexpr int kMaxConstHops = 8;       // Identity chains followed back to a Const
constexpr int kMaxFuncAttrDepth = 8;   // NameAttrList nesting followed for op names
constexpr std::size_t kMaxShownValues = 4;
constexpr std::size_t kMaxShownBytes = 200;
constexpr std::size_t kMaxOpNameKey = 256;
constexpr std::size_t kGraphSniffBytes = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Text helpers


std::string shown(std::string_view s, std::size_t max = kMaxShownBytes) { return core::printable(s, max); }
std::string quoted(std::string_view s) { return "'" + core::printable(s, 120) + "'"; }

// At most `max` bytes, cut at a UTF-8 character boundary.
std::string clip_utf8(std::string_view s, std::size_t max) {
  if (s.size() <= max) return std::string(s);
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return std::string(s.substr(0, n));
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

// A path that leaves the directory it is meant for: absolute (POSIX, Windows drive or UNC), a
// URL (gs://, hdfs://, file://...), or with a ".." component.
bool path_escapes(std::string_view path) {
  if (path.size() > 1 && (path[0] == '/' || path[0] == '\\')) return true;
  if (path.size() >= 3 && ((path[0] | 0x20) >= 'a' && (path[0] | 0x20) <= 'z') && path[1] == ':' &&
      (path[2] == '/' || path[2] == '\\'))
    return true;
  if (path.find("://") != std::string_view::npos) return true;
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find_first_of("/\\", start);
    if (end == std::string_view::npos) end = path.size();
    if (path.substr(start, end - start) == "..") return true;
    start = end + 1;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The op table

enum class Category { PythonCallback, FileRead, FileWrite, Network, Checkpoint, PrintStream, DebugUrl, CacheFile, DescriptorSource };

struct OpRule {
  Category category;
  Severity severity;
};

std::optional<Category> parse_category(std::string_view s) {
  static constexpr std::pair<std::string_view, Category> kNames[] = {
      {"python-callback", Category::PythonCallback}, {"file-read", Category::FileRead},
      {"file-write", Category::FileWrite},           {"network", Category::Network},
      {"checkpoint", Category::Checkpoint},          {"print-stream", Category::PrintStream},
      {"debug-url", Category::DebugUrl},             {"cache-file", Category::CacheFile},
      {"descriptor-source", Category::DescriptorSource},
  };
  for (const auto& [name, category] : kNames)
    if (name == s) return category;
  return std::nullopt;
}

std::optional<Severity> parse_level(std::string_view s) {
  if (s == "critical") return Severity::Critical;
  if (s == "high") return Severity::High;
  if (s == "medium") return Severity::Medium;
  if (s == "low") return Severity::Low;
  if (s == "info") return Severity::Info;
  return std::nullopt;
}

using OpTable = std::unordered_map<std::string, OpRule>;

// Lines that do not read "OpName category severity" are skipped.
OpTable parse_op_table(std::string_view text) {
  OpTable table;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    pos = eol + 1;
    if (const std::size_t hash = line.find('#'); hash != std::string_view::npos) line = line.substr(0, hash);
    std::array<std::string_view, 3> words;
    std::size_t count = 0, i = 0;
    while (i < line.size()) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r')) ++i;
      const std::size_t begin = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t' && line[i] != '\r') ++i;
      if (i > begin) {
        if (count == words.size()) {
          count = words.size() + 1;
          break;
        }
        words[count++] = line.substr(begin, i - begin);
      }
    }
    if (count != 3) continue;
    const auto category = parse_category(words[1]);
    const auto severity = parse_level(words[2]);
    if (category && severity) table[std::string(words[0])] = OpRule{*category, *severity};
  }
  return table;
}

const OpTable& op_table() {
  static const OpTable table = parse_op_table(tf_op_table());
  return table;
}

const OpRule* find_rule(std::string_view op) {
  const OpTable& table = op_table();
  const auto it = table.find(std::string(op));
  return it == table.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------------------------------------
// Issues: at most kMaxIssuesPerFile; when full, a more severe issue replaces the least severe one,
// and the last slot says how many were left out.

class IssueSink {
 public:
  explicit IssueSink(std::vector<FormatIssue>& issues) : issues_(issues) {}

  void add(FormatIssue issue) {
    if (issues_.size() + 1 < kMaxIssuesPerFile) {
      issues_.push_back(std::move(issue));
      return;
    }
    ++dropped_;
    auto lowest = std::min_element(issues_.begin(), issues_.end(),
                                   [](const FormatIssue& a, const FormatIssue& b) { return a.severity < b.severity; });
    if (lowest != issues_.end() && lowest->severity < issue.severity) *lowest = std::move(issue);
  }

  void finish() {
    if (dropped_ == 0) return;
    FormatIssue note;
    note.rule = "tf.graph-limit";
    note.severity = Severity::Medium;
    note.title = "More TensorFlow findings than are listed";
    note.evidence = std::to_string(dropped_) + " further findings were left out (the most severe are kept)";
    note.remediation = "Review the model's graph with TensorFlow tooling in an isolated environment.";
    note.kind = IssueClass::Container;
    issues_.push_back(std::move(note));
  }

 private:
  std::vector<FormatIssue>& issues_;
  std::size_t dropped_ = 0;
};

FormatIssue container_issue(std::string rule, Severity severity, std::string title, std::string evidence,
                            std::string remediation) {
  FormatIssue issue;
  issue.rule = std::move(rule);
  issue.severity = severity;
  issue.title = std::move(title);
  issue.evidence = std::move(evidence);
  issue.remediation = std::move(remediation);
  issue.kind = IssueClass::Container;
  return issue;
}

// ---------------------------------------------------------------------------------------------
// What protobuf would allocate for a message, estimated from the wire format and the descriptor.
// String payloads are bounded by the file size and not counted; objects, string headers, map
// nodes and unknown-field records are. Wire errors end the walk: the parser then rejects the file.

class FootprintWalker {
 public:
  explicit FootprintWalker(std::uint64_t budget) : budget_(budget) {}

  // False when the estimate went over the budget.
  bool walk(std::span<const std::uint8_t> data, const pb::Descriptor* root) {
    const std::uint8_t* p = data.data();
    const std::uint8_t* const end = data.data() + data.size();
    charge(message_size(root));
    fields(p, end, root, 0, 0);
    return !over_;
  }

  std::uint64_t estimate() const { return estimate_; }

 private:
  static constexpr std::uint64_t kAllocation = 16;     // allocator header per heap object
  static constexpr std::uint64_t kStringObject = 48;   // std::string + header, repeated element
  static constexpr std::uint64_t kUnknownScalar = 32;  // UnknownField record, vector growth
  static constexpr std::uint64_t kMapNode = 64;        // hash node, bucket share
  static constexpr std::uint64_t kGroupSet = 48;       // nested UnknownFieldSet

  static bool varint(const std::uint8_t*& p, const std::uint8_t* end, std::uint64_t& out) {
    out = 0;
    for (int i = 0; i < 10; ++i) {
      if (p == end) return false;
      const std::uint8_t b = *p++;
      out |= static_cast<std::uint64_t>(b & 0x7F) << (7 * i);
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }

  void charge(std::uint64_t bytes) {
    estimate_ += bytes;
    if (estimate_ > budget_) over_ = true;
  }

  // Object size of a generated message, from its fields (reflection on default instances is not
  // safe for map entries): header, then 8 bytes a singular field, 24 a repeated one, 80 a map.
  // A map entry is the hash node holding key and value.
  std::uint64_t message_size(const pb::Descriptor* d) {
    const auto it = sizes_.find(d);
    if (it != sizes_.end()) return it->second;
    std::uint64_t size = 48;
    if (d->options().map_entry()) {
      size = kMapNode + kStringObject;
    } else {
      for (int i = 0; i < d->field_count(); ++i) {
        const pb::FieldDescriptor* f = d->field(i);
        size += f->is_map() ? 80 : f->is_repeated() ? 24 : 8;
      }
    }
    size += kAllocation + 8;  // and the pointer in the repeated field that holds it
    sizes_.emplace(d, size);
    return size;
  }

  static std::uint64_t packed_element_bytes(const pb::FieldDescriptor* f) {
    switch (f->cpp_type()) {
      case pb::FieldDescriptor::CPPTYPE_INT64:
      case pb::FieldDescriptor::CPPTYPE_UINT64:
      case pb::FieldDescriptor::CPPTYPE_DOUBLE: return 8;
      case pb::FieldDescriptor::CPPTYPE_BOOL: return 1;
      default: return 4;
    }
  }

  // The wire type protobuf expects for a declared field; another one makes it an unknown field.
  static bool wire_matches(const pb::FieldDescriptor* f, unsigned wire) {
    switch (f->type()) {
      case pb::FieldDescriptor::TYPE_MESSAGE:
      case pb::FieldDescriptor::TYPE_STRING:
      case pb::FieldDescriptor::TYPE_BYTES: return wire == 2;
      case pb::FieldDescriptor::TYPE_GROUP: return wire == 3;
      default: break;
    }
    if (f->is_repeated() && wire == 2) return true;  // packed
    switch (f->type()) {
      case pb::FieldDescriptor::TYPE_DOUBLE:
      case pb::FieldDescriptor::TYPE_FIXED64:
      case pb::FieldDescriptor::TYPE_SFIXED64: return wire == 1;
      case pb::FieldDescriptor::TYPE_FLOAT:
      case pb::FieldDescriptor::TYPE_FIXED32:
      case pb::FieldDescriptor::TYPE_SFIXED32: return wire == 5;
      default: return wire == 0;
    }
  }

  // Walks fields until `end`, or until the end-group tag of `group` (a field number) when nonzero.
  // `d` is null inside unknown fields. Returns false on a wire error.
  bool fields(const std::uint8_t*& p, const std::uint8_t* end, const pb::Descriptor* d, int depth, std::uint64_t group) {
    while (p < end && !over_) {
      std::uint64_t tag = 0;
      if (!varint(p, end, tag)) return false;
      const std::uint64_t number = tag >> 3;
      const unsigned wire = static_cast<unsigned>(tag & 7);
      if (number == 0 || number > 0x1FFFFFFF) return false;
      const pb::FieldDescriptor* f = d ? d->FindFieldByNumber(static_cast<int>(number)) : nullptr;
      if (f && !wire_matches(f, wire)) f = nullptr;
      switch (wire) {
        case 0: {
          std::uint64_t ignored = 0;
          if (!varint(p, end, ignored)) return false;
          if (!f || f->is_repeated()) charge(f ? 8 : kUnknownScalar);
          break;
        }
        case 1:
        case 5: {
          const std::size_t width = wire == 1 ? 8 : 4;
          if (static_cast<std::size_t>(end - p) < width) return false;
          p += width;
          if (!f || f->is_repeated()) charge(f ? 8 : kUnknownScalar);
          break;
        }
        case 2: {
          std::uint64_t length = 0;
          if (!varint(p, end, length) || length > static_cast<std::uint64_t>(end - p)) return false;
          const std::uint8_t* sub_end = p + length;
          if (f && f->type() == pb::FieldDescriptor::TYPE_MESSAGE) {
            charge(message_size(f->message_type()));
            if (depth + 1 <= kMaxProtoDepth) {
              const std::uint8_t* q = p;
              if (!fields(q, sub_end, f->message_type(), depth + 1, 0)) return false;
            }
          } else if (f && (f->type() == pb::FieldDescriptor::TYPE_STRING || f->type() == pb::FieldDescriptor::TYPE_BYTES)) {
            charge((f->is_repeated() ? kStringObject : 0) + (length > 15 ? kAllocation : 0));
          } else if (f && f->is_repeated()) {
            charge(length * packed_element_bytes(f));
          } else {
            charge(kUnknownScalar + kStringObject);
          }
          p = sub_end;
          break;
        }
        case 3: {
          charge(kUnknownScalar + kGroupSet);
          if (depth + 1 > kMaxProtoDepth) return false;
          if (!fields(p, end, nullptr, depth + 1, number)) return false;
          break;
        }
        case 4: return group != 0 && number == group;
        default: return false;
      }
    }
    return group == 0;
  }

  std::uint64_t budget_;
  std::uint64_t estimate_ = 0;
  bool over_ = false;
  std::unordered_map<const pb::Descriptor*, std::uint64_t> sizes_;
};

// Checks size and footprint, then parses. Reports and returns false when it did not parse.
bool parse_message(std::span<const std::uint8_t> data, pb::Message& message, std::string_view what,
                   Severity unreadable_severity, IssueSink& sink) {
  if (data.size() > kMaxParseBytes) {
    sink.add(container_issue(
        "tf.graph-limit", Severity::Medium, "TensorFlow " + std::string(what) + " too large to analyse",
        std::to_string(data.size()) + " bytes; protobuf (and TensorFlow) read at most 2 GiB - 1 in one message",
        "The file was not analysed. TensorFlow cannot load it either; verify where it came from."));
    return false;
  }
  FootprintWalker walker(kMaxHeapOverhead);
  if (!walker.walk(data, message.GetDescriptor())) {
    sink.add(container_issue(
        "tf.graph-limit", Severity::Medium, "TensorFlow " + std::string(what) + " over the analysis memory limit",
        "parsing would allocate more than " + std::to_string(kMaxHeapOverhead >> 20) +
            " MiB of objects beyond the file's bytes (many tiny messages in " + std::to_string(data.size()) + " bytes)",
        "The file was not analysed; a model this shaped is unusual. Verify where it came from."));
    return false;
  }
  if (!message.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
    sink.add(container_issue(
        "tf.unreadable", unreadable_severity, "TensorFlow " + std::string(what) + " could not be parsed",
        std::to_string(data.size()) +
            " bytes that are not a valid protobuf message of this kind (truncated, corrupt, nested deeper than 100, "
            "or text that is not UTF-8)",
        "Do not load the file; obtain the model again from a trusted source."));
    return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Graph review

struct Scope {
  std::string label;  // TfFunctionOps.function
  std::string where;  // "graph" or "library/function 'f'", under "meta_graphs[i]/" for a SavedModel
};

using NodeIndex = std::unordered_map<std::string_view, const tf::NodeDef*>;

// "^name", "name:1", "name:output:0" -> "name"
std::string_view input_node_name(std::string_view input) {
  if (!input.empty() && input[0] == '^') input.remove_prefix(1);
  return input.substr(0, input.find(':'));
}

const tf::AttrValue* find_attr(const tf::NodeDef& node, const std::string& key) {
  const auto it = node.attr().find(key);
  return it == node.attr().end() ? nullptr : &it->second;
}

struct ConstValue {
  std::string node;                  // the Const node's name
  std::vector<std::string> strings;  // its first few string values
  std::size_t total = 0;             // how many it has
};

// The string constant an input reads, following Identity-like ops back to a Const.
std::optional<ConstValue> resolve_const(std::string_view input, const NodeIndex& index) {
  for (int hop = 0; hop <= kMaxConstHops; ++hop) {
    const auto it = index.find(input_node_name(input));
    if (it == index.end()) return std::nullopt;
    const tf::NodeDef& node = *it->second;
    const std::string& op = node.op();
    if (op == "Const" || op == "HostConst") {
      const tf::AttrValue* value = find_attr(node, "value");
      if (!value || !value->has_tensor() || value->tensor().dtype() != tf::DT_STRING) return std::nullopt;
      ConstValue out;
      out.node = node.name();
      out.total = static_cast<std::size_t>(value->tensor().string_val_size());
      for (const std::string& s : value->tensor().string_val()) {
        if (out.strings.size() == kMaxShownValues) break;
        out.strings.push_back(s);
      }
      return out;
    }
    if ((op == "Identity" || op == "Snapshot" || op == "StopGradient" || op == "PreventGradient") && node.input_size() > 0) {
      input = node.input(0);
      continue;
    }
    return std::nullopt;
  }
  return std::nullopt;
}

std::string describe_const(const ConstValue& value) {
  std::string out = "Const " + quoted(value.node) + " = ";
  if (value.strings.empty()) return out + "(no strings)";
  for (std::size_t i = 0; i < value.strings.size(); ++i) {
    if (i) out += ", ";
    out += "\"" + shown(value.strings[i]) + "\"";
  }
  if (value.total > value.strings.size()) out += " (+" + std::to_string(value.total - value.strings.size()) + " more)";
  return out;
}

// The string-constant inputs of a node, described: "input 0 'x:output:0' <- Const 'x' = "..."".
std::string describe_const_inputs(const tf::NodeDef& node, const NodeIndex& index) {
  std::string out;
  std::size_t shown_count = 0;
  for (int i = 0; i < node.input_size() && shown_count < kMaxShownValues; ++i) {
    const std::string& input = node.input(i);
    if (!input.empty() && input[0] == '^') continue;
    if (const auto value = resolve_const(input, index)) {
      out += "; input " + std::to_string(i) + " " + quoted(input) + " <- " + describe_const(*value);
      ++shown_count;
    }
  }
  return out;
}

std::vector<std::string> attr_strings(const tf::NodeDef& node, const std::string& key) {
  std::vector<std::string> out;
  const tf::AttrValue* value = find_attr(node, key);
  if (!value) return out;
  if (value->value_case() == tf::AttrValue::kS) out.push_back(value->s());
  if (value->has_list())
    for (const std::string& s : value->list().s()) out.push_back(s);
  return out;
}

struct RuleText {
  std::string_view rule;
  std::string_view verb;
  std::string_view remediation;
};

RuleText rule_text(Category category) {
  switch (category) {
    case Category::PythonCallback:
      return {"tf.python-callback", "calls back into Python",
              "Do not run this graph: the op runs a Python function of the loading process. Rebuild the model "
              "without tf.py_function/tf.numpy_function or load it only in an isolated sandbox."};
    case Category::FileRead:
    case Category::DescriptorSource:
      return {"tf.file-read", "reads files",
              "Check which files the op reads before running the model; a model that reads local files can leak "
              "them through its outputs. Run it only in a sandbox without access to sensitive files."};
    case Category::FileWrite:
    case Category::PrintStream:
    case Category::CacheFile:
      return {"tf.file-write", "writes files",
              "Check what and where the op writes before running the model; run it only in a sandbox with a "
              "read-only file system."};
    case Category::Network:
      return {"tf.network", "reaches the network",
              "Check which hosts the op contacts before running the model; run it only without network access."};
    case Category::Checkpoint:
      return {"tf.checkpoint-path", "uses a hard-coded checkpoint path outside the model",
              "Checkpoint paths are normally fed at run time; a fixed absolute or '..' path reads or overwrites "
              "files outside the model directory. Do not run the save or restore ops of this graph."};
    case Category::DebugUrl:
      break;
  }
  return {"tf.file-write", "writes debug data", "Remove the debug ops before running the model."};
}

class GraphReview {
 public:
  GraphReview(TfInfo& info, IssueSink& sink) : info_(info), sink_(sink) {}

  // One GraphDef: its nodes, then each library function. `label_prefix` is "" or "tags/",
  // `where_prefix` "" or "meta_graphs[i]/".
  void graph(const tf::GraphDef& graph, const std::string& label_prefix, const std::string& where_prefix) {
    library_.clear();
    for (const tf::FunctionDef& function : graph.library().function()) library_.insert(function.signature().name());
    nodes(graph.node(), Scope{label_prefix + "graph", where_prefix + "graph"});
    for (const tf::FunctionDef& function : graph.library().function()) {
      if (stopped_) return;
      if (functions_ >= kMaxFunctions) {
        limit("functions", std::to_string(kMaxFunctions) + " functions");
        return;
      }
      ++functions_;
      const std::string& name = function.signature().name();
      nodes(function.node_def(),
            Scope{label_prefix + clip_utf8(name, kMaxOpNameKey), where_prefix + "library/function " + quoted(name)});
    }
  }

  bool stopped() const { return stopped_; }

 private:
  void limit(const std::string& what, const std::string& bound) {
    stopped_ = true;
    sink_.add(container_issue("tf.graph-limit", Severity::Medium, "TensorFlow graph over the analysis limit of " + bound,
                              "counting stopped at " + what + "; ops after that point were not reviewed",
                              "Review the remaining graph with TensorFlow tooling in an isolated environment."));
  }

  void nodes(const pb::RepeatedPtrField<tf::NodeDef>& list, const Scope& scope) {
    if (stopped_) return;
    NodeIndex index;
    index.reserve(static_cast<std::size_t>(list.size()));
    for (const tf::NodeDef& node : list) index.emplace(node.name(), &node);
    TfFunctionOps ops;
    ops.function = scope.label;
    for (const tf::NodeDef& node : list) {
      if (nodes_ >= kMaxNodes) {
        info_.functions.push_back(std::move(ops));
        limit("node " + std::to_string(kMaxNodes) + " in " + quoted(scope.label), std::to_string(kMaxNodes) + " nodes");
        return;
      }
      ++nodes_;
      ++ops.op_counts[clip_utf8(node.op(), kMaxOpNameKey)];
      review(node, scope, index);
    }
    info_.functions.push_back(std::move(ops));
  }

  void report(Category category, Severity severity, const tf::NodeDef& node, const Scope& scope, std::string detail,
              std::string_view op_override = {}) {
    const RuleText text = rule_text(category);
    report_rule(std::string(text.rule), severity, std::string(text.verb), std::string(text.remediation), node, scope,
                std::move(detail), op_override);
  }

  void report_rule(std::string rule, Severity severity, const std::string& verb, std::string remediation,
                   const tf::NodeDef& node, const Scope& scope, std::string detail, std::string_view op_override = {}) {
    const std::string_view op = op_override.empty() ? std::string_view(node.op()) : op_override;
    FormatIssue issue;
    issue.rule = std::move(rule);
    issue.severity = severity;
    issue.title = "TensorFlow op " + shown(op, 120) + " " + verb + " (node " + quoted(node.name()) + " in " +
                  quoted(scope.label) + ")";
    issue.evidence = "op " + quoted(op) + ", node " + quoted(node.name()) + ", function " + quoted(scope.label) + detail;
    issue.where = scope.where + "/node " + quoted(node.name());
    issue.remediation = std::move(remediation);
    issue.kind = IssueClass::Code;
    sink_.add(std::move(issue));
  }

  void review(const tf::NodeDef& node, const Scope& scope, const NodeIndex& index) {
    const std::string& op = node.op();
    if (op.find('>') != std::string::npos) {
      report_rule("tf.custom-op", Severity::Medium, "is a custom op that needs a native library",
                  "Loading this model needs the shared library that registers the op, and that library runs native "
                  "code. Install custom-op libraries only from their trusted publisher.",
                  node, scope, "");
    }
    if (const OpRule* rule = find_rule(op)) review_rule(*rule, node, scope, index);
    for (const auto& [key, value] : node.attr()) function_attr(value, key, node, scope, 0);
  }

  void review_rule(const OpRule& rule, const tf::NodeDef& node, const Scope& scope, const NodeIndex& index) {
    switch (rule.category) {
      case Category::PythonCallback: {
        std::string detail;
        for (const std::string& token : attr_strings(node, "token")) detail += "; token \"" + shown(token) + "\"";
        report(rule.category, rule.severity, node, scope, detail + describe_const_inputs(node, index));
        return;
      }
      case Category::FileRead:
      case Category::FileWrite:
      case Category::Network: {
        std::string detail = describe_const_inputs(node, index);
        for (const char* key : {"memory_region_name", "filename"})
          for (const std::string& s : attr_strings(node, key))
            if (!s.empty()) detail += std::string("; attr ") + key + " \"" + shown(s) + "\"";
        report(rule.category, rule.severity, node, scope, detail);
        return;
      }
      case Category::Checkpoint: {
        const int inputs = node.op() == "MergeV2Checkpoints" ? 2 : 1;
        for (int i = 0; i < inputs && i < node.input_size(); ++i) {
          const auto value = resolve_const(node.input(i), index);
          if (!value) continue;
          const bool escapes = std::any_of(value->strings.begin(), value->strings.end(),
                                           [](const std::string& s) { return path_escapes(s); });
          if (escapes) {
            report(rule.category, rule.severity, node, scope,
                   "; path input " + std::to_string(i) + " " + quoted(node.input(i)) + " <- " + describe_const(*value));
            return;
          }
        }
        return;
      }
      case Category::PrintStream:
        for (const std::string& stream : attr_strings(node, "output_stream"))
          if (starts_with(stream, "file://")) {
            report(rule.category, rule.severity, node, scope, "; attr output_stream \"" + shown(stream) + "\"");
            return;
          }
        return;
      case Category::DebugUrl: {
        std::string files, hosts;
        for (const char* key : {"debug_urls", "debug_ops_spec"})
          for (const std::string& url : attr_strings(node, key)) {
            if (url.find("file://") != std::string::npos && files.size() < 4 * kMaxShownBytes)
              files += std::string("; attr ") + key + " \"" + shown(url) + "\"";
            if (url.find("grpc://") != std::string::npos && hosts.size() < 4 * kMaxShownBytes)
              hosts += std::string("; attr ") + key + " \"" + shown(url) + "\"";
          }
        if (!files.empty())
          report_rule("tf.file-write", rule.severity, "writes debug dumps to files",
                      "Remove the debug ops (or their file:// URLs) before running the model.", node, scope, files);
        if (!hosts.empty())
          report_rule("tf.network", rule.severity, "sends tensors to a debug server",
                      "Remove the debug ops (or their grpc:// URLs) before running the model; run it without network "
                      "access.",
                      node, scope, hosts);
        return;
      }
      case Category::CacheFile: {
        if (node.input_size() > 1) {
          const auto value = resolve_const(node.input(1), index);
          if (value && value->total <= 1 && (value->strings.empty() || value->strings[0].empty())) return;  // in memory
        }
        report(rule.category, rule.severity, node, scope, describe_const_inputs(node, index));
        return;
      }
      case Category::DescriptorSource:
        for (const std::string& source : attr_strings(node, "descriptor_source"))
          if (!source.empty() && source != "local://" && !starts_with(source, "bytes://")) {
            report(rule.category, rule.severity, node, scope, "; attr descriptor_source \"" + shown(source) + "\"");
            return;
          }
        return;
    }
  }

  // Ops named by function-valued attrs: a name that is not a library function is instantiated as
  // the primitive op of that name.
  void function_attr(const tf::AttrValue& value, const std::string& key, const tf::NodeDef& node, const Scope& scope,
                     int depth) {
    if (depth > kMaxFuncAttrDepth) return;
    if (value.has_func()) name_attr_list(value.func(), key, node, scope, depth);
    if (value.has_list())
      for (const tf::NameAttrList& func : value.list().func()) name_attr_list(func, key, node, scope, depth);
  }

  void name_attr_list(const tf::NameAttrList& func, const std::string& key, const tf::NodeDef& node, const Scope& scope,
                      int depth) {
    const std::string& name = func.name();
    if (!library_.contains(name)) {
      const OpRule* rule = find_rule(name);
      if (rule && (rule->category == Category::PythonCallback || rule->category == Category::FileRead ||
                   rule->category == Category::FileWrite || rule->category == Category::Network)) {
        report(rule->category, rule->severity, node, scope,
               "; op " + quoted(name) + " is named by function attr " + quoted(key) + " of op " + quoted(node.op()) +
                   ", which runs it as a one-op function",
               name);
      } else if (name.find('>') != std::string::npos) {
        report_rule("tf.custom-op", Severity::Medium, "is a custom op that needs a native library",
                    "Install custom-op libraries only from their trusted publisher.", node, scope,
                    "; named by function attr " + quoted(key), name);
      }
    }
    for (const auto& [inner_key, inner] : func.attr()) function_attr(inner, inner_key, node, scope, depth + 1);
  }

  TfInfo& info_;
  IssueSink& sink_;
  std::unordered_set<std::string> library_;
  std::size_t nodes_ = 0;
  std::size_t functions_ = 0;
  bool stopped_ = false;
};

// ---------------------------------------------------------------------------------------------
// The four kinds

class KerasJson {
 public:
  KerasJson(TfInfo& info, IssueSink& sink) : info_(info), sink_(sink) {}
  void add(const std::string& json, std::string_view where) {
    if (json.empty() || full_) return;
    if (info_.keras_metadata_json.size() >= kMaxKerasJsonCount || bytes_ + json.size() > kMaxKerasJsonBytes) {
      full_ = true;
      sink_.add(container_issue("tf.graph-limit", Severity::Medium, "Keras metadata over the analysis limit",
                                "more than " + std::to_string(kMaxKerasJsonCount) + " objects or " +
                                    std::to_string(kMaxKerasJsonBytes >> 20) + " MiB of metadata JSON in " +
                                    std::string(where) + "; the rest was not reviewed",
                                "Review the remaining Keras layers in an isolated environment."));
      return;
    }
    bytes_ += json.size();
    info_.keras_metadata_json.push_back(json);
  }

 private:
  TfInfo& info_;
  IssueSink& sink_;
  std::uint64_t bytes_ = 0;
  bool full_ = false;
};

void analyze_saved_model(std::span<const std::uint8_t> data, TfInfo& info, IssueSink& sink) {
  tf::SavedModel model;
  if (!parse_message(data, model, "SavedModel", Severity::High, sink)) return;
  info.parsed = true;
  GraphReview review(info, sink);
  KerasJson keras(info, sink);
  const bool several = model.meta_graphs_size() > 1;
  for (int i = 0; i < model.meta_graphs_size() && !review.stopped(); ++i) {
    const tf::MetaGraphDef& meta = model.meta_graphs(i);
    std::string tags;
    for (const std::string& tag : meta.meta_info_def().tags()) {
      if (!tags.empty()) tags += ',';
      tags += clip_utf8(tag, kMaxOpNameKey);
      if (tags.size() > 4 * kMaxOpNameKey) break;
    }
    info.tags.push_back(tags);
    const std::string where = "meta_graphs[" + std::to_string(i) + "]/";
    const std::string label = several ? (tags.empty() ? "meta_graphs[" + std::to_string(i) + "]" : tags) + "/" : "";
    review.graph(meta.graph_def(), label, where);
    for (int a = 0; a < meta.asset_file_def_size(); ++a) {
      const std::string& filename = meta.asset_file_def(a).filename();
      if (!path_escapes(filename)) continue;
      FormatIssue issue;
      issue.rule = "tf.asset-path";
      issue.severity = Severity::High;
      issue.title = "SavedModel asset path leaves the model directory: " + quoted(filename);
      issue.evidence = "asset_file_def[" + std::to_string(a) + "].filename \"" + shown(filename) +
                       "\" is joined to <model>/assets/ when the model loads";
      issue.where = where + "asset_file_def[" + std::to_string(a) + "]";
      issue.remediation = "Asset file names must be plain relative names; do not load this model.";
      issue.kind = IssueClass::Code;
      sink.add(std::move(issue));
    }
    for (const tf::SavedObject& object : meta.object_graph_def().nodes())
      keras.add(object.user_object().metadata(), "the SavedModel object graph");
  }
}

void analyze_graph_def(std::span<const std::uint8_t> data, TfInfo& info, IssueSink& sink) {
  tf::GraphDef graph;
  if (!parse_message(data, graph, "GraphDef", Severity::High, sink)) return;
  info.parsed = true;
  GraphReview review(info, sink);
  review.graph(graph, "", "");
}

void analyze_keras_metadata(std::span<const std::uint8_t> data, TfInfo& info, IssueSink& sink) {
  tf::KerasSavedMetadata metadata;
  if (!parse_message(data, metadata, "Keras metadata", Severity::High, sink)) return;
  info.parsed = true;
  KerasJson keras(info, sink);
  for (const tf::KerasSavedObject& node : metadata.nodes()) keras.add(node.metadata(), "keras_metadata.pb");
}

void analyze_fingerprint(std::span<const std::uint8_t> data, TfInfo& info, IssueSink& sink) {
  tf::FingerprintDef fingerprint;
  if (!parse_message(data, fingerprint, "fingerprint", Severity::Medium, sink)) return;
  info.parsed = true;
  info.fingerprint = "saved_model_checksum=" + std::to_string(fingerprint.saved_model_checksum()) +
                     " graph_def_program_hash=" + std::to_string(fingerprint.graph_def_program_hash()) +
                     " signature_def_hash=" + std::to_string(fingerprint.signature_def_hash()) +
                     " saved_object_graph_hash=" + std::to_string(fingerprint.saved_object_graph_hash()) +
                     " checkpoint_hash=" + std::to_string(fingerprint.checkpoint_hash()) +
                     " version=" + std::to_string(fingerprint.version().producer());
  if (!fingerprint.uuid().empty()) info.fingerprint += " uuid=" + shown(fingerprint.uuid(), 64);
}


// A NodeDef that starts with a printable name (field 1) or op (field 2).
bool looks_like_node(std::span<const std::uint8_t> node) {
  std::size_t pos = 0;
  std::uint64_t tag = 0, length = 0;
  if (!read_varint(node, pos, tag) || (tag != 0x0A && tag != 0x12)) return false;
  if (!read_varint(node, pos, length) || length == 0 || length > node.size() - pos) return false;
  const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(length, 256));
  for (std::size_t i = 0; i < n; ++i)
    if (node[pos + i] < 0x20 || node[pos + i] >= 0x7F) return false;
  return true;
}

}  // namespace

TfInfo analyze_tf(std::span<const std::uint8_t> data, TfFileKind kind) {
  TfInfo info;
  info.kind = kind;
  IssueSink sink(info.issues);
  try {
    switch (kind) {
      case TfFileKind::SavedModel: analyze_saved_model(data, info, sink); break;
      case TfFileKind::GraphDef: analyze_graph_def(data, info, sink); break;
      case TfFileKind::KerasMetadata: analyze_keras_metadata(data, info, sink); break;
      case TfFileKind::Fingerprint: analyze_fingerprint(data, info, sink); break;
    }
  } catch (const std::exception& e) {
    sink.add(container_issue("tf.unreadable", Severity::High, "TensorFlow file analysis stopped",
                             std::string("error while reading the file: ") + shown(e.what()),
                             "Do not load the file; review it in an isolated environment."));
  } catch (...) {
    sink.add(container_issue("tf.unreadable", Severity::High, "TensorFlow file analysis stopped",
                             "unexpected error while reading the file",
                             "Do not load the file; review it in an isolated environment."));
  }
  sink.finish();
  return info;
}

std::optional<TfFileKind> tf_kind_from_name(std::string_view file_name) {
  const std::size_t slash = file_name.find_last_of("/\\!");  // '!' separates archive members
  std::string base(slash == std::string_view::npos ? file_name : file_name.substr(slash + 1));
  for (char& c : base) c = static_cast<char>((c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c);
  if (base == "saved_model.pb") return TfFileKind::SavedModel;
  if (base == "keras_metadata.pb") return TfFileKind::KerasMetadata;
  if (base == "fingerprint.pb") return TfFileKind::Fingerprint;
  if ((base.size() > 3 && base.ends_with(".pb")) || (base.size() > 9 && base.ends_with(".graphdef")))
    return TfFileKind::GraphDef;
  return std::nullopt;
}

bool looks_like_graphdef(std::span<const std::uint8_t> data) {
  const std::size_t limit = std::min(data.size(), kGraphSniffBytes);
  std::size_t pos = 0;
  bool node = false, library = false;
  for (int fields = 0; fields < 16 && pos < limit; ++fields) {
    std::uint64_t tag = 0, value = 0;
    if (!read_varint(data, pos, tag)) return false;
    const std::uint64_t number = tag >> 3, wire = tag & 7;
    if (number == 3 && wire == 0) {
      if (!read_varint(data, pos, value)) return false;
      continue;
    }
    if (wire != 2 || !(number == 1 || number == 2 || number == 4 || number == 5)) return false;
    if (!read_varint(data, pos, value) || value > data.size() - pos) return false;
    const auto body = data.subspan(pos, static_cast<std::size_t>(value));
    if (number == 1) {
      if (!looks_like_node(body)) return false;
      node = true;
    }
    if (number == 2) {
      if (body.size() < 2 || body[0] != 0x0A) return false;  // starts with a FunctionDef
      library = true;
    }
    pos += static_cast<std::size_t>(value);
  }
  return node || library;
}

}  // namespace aegis::formats

namespace aegis::formats {
void silence_protobuf_logging() {
  static const bool done = [] {
    google::protobuf::SetLogHandler(nullptr);
    return true;
  }();
  (void)done;
}
}  // namespace aegis::formats
