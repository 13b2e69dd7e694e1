// Reads an ONNX ModelProto with protobuf's own parser and walks every graph a runtime would load:
// the main graph, the subgraphs in node attributes (If/Loop/Scan), model-local functions and the
// training graphs. Only the parsed message is inspected; sizes the file declares are checked with
// overflow-safe arithmetic and never used to allocate. External-data files are looked at with
// stat() only, and only when their path stays inside the model's folder.
#include "aegis/formats/onnx_model.h"

#include "aegis/core/text.h"
#include "aegis/formats/protobuf_wire.h"

#include <onnx/defs/schema.h>
#include <onnx/onnx_pb.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <exception>
#include <limits>
#include <optional>
#include <set>
#include <string_view>
#include <system_error>
#include <tuple>
#include <unordered_set>

namespace aegis::formats {
namespace {

namespace fs = std::filesystem;
using core::Severity;

constexpr std::size_t kMaxNameChars = 120;      // one name or path quoted in a title or evidence
constexpr std::size_t kMaxListed = 12;          // names listed in one evidence line
constexpr std::size_t kMaxExternalFiles = 256;  // distinct locations kept in OnnxInfo
constexpr std::size_t kMaxProbedFiles = 256;    // stat() calls per model
constexpr std::size_t kMaxOpKeys = 4096;        // distinct keys in op_counts
// Issues of one rule kept before the final severity sort, so that a flood of one kind of
// container issue cannot push a critical finding past kMaxIssuesPerFile.
constexpr std::size_t kMaxPendingPerRule = kMaxIssuesPerFile;

constexpr std::string_view kMicrosoftDomain = "com.microsoft";

// ---------------------------------------------------------------------------------------------
// Text


std::string printable(std::string_view text, std::size_t limit = kMaxNameChars) { return core::printable(text, limit); }
std::string in_quotes(std::string_view text) { return "'" + printable(text) + "'"; }

std::string human_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double value = static_cast<double>(bytes);
  std::size_t unit = 0;
  while (value >= 1024.0 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  char buf[32];
  if (unit == 0) std::snprintf(buf, sizeof buf, "%.0f %s", value, kUnits[unit]);
  else std::snprintf(buf, sizeof buf, "%.1f %s", value, kUnits[unit]);
  return buf;
}

// "a, b, c (+4 more)"
std::string joined(const std::vector<std::string>& items, std::size_t total) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += ", ";
    out += items[i];
  }
  if (total > items.size()) out += " (+" + std::to_string(total - items.size()) + " more)";
  return out;
}

// ---------------------------------------------------------------------------------------------
// Domains and the operator registry

// "ai.onnx" is another spelling of the default domain.
std::string canonical_domain(std::string_view domain) {
  return domain == "ai.onnx" ? std::string() : std::string(domain);
}

bool is_standard_domain(std::string_view domain) {
  return domain.empty() || domain == "ai.onnx" || domain == "ai.onnx.ml" || domain == "ai.onnx.training" ||
         domain == "ai.onnx.preview.training";
}

std::string op_key(const std::string& domain, std::string_view op) {
  return domain.empty() ? std::string(op) : domain + "::" + std::string(op);
}

std::string domain_label(const std::string& domain) {
  return domain.empty() ? std::string("the default ONNX domain") : "domain " + in_quotes(domain);
}

// Standard operators added after the newest opset this build's ONNX registry knows, so that a
// model exported for a newer opset is not reported for using them (ops.md of the ONNX releases).
struct LaterOp {
  std::string_view domain;
  std::string_view name;
  int since;
};
constexpr LaterOp kLaterOps[] = {
    {"", "BitwiseAnd", 18},       {"", "BitwiseNot", 18},      {"", "BitwiseOr", 18},
    {"", "BitwiseXor", 18},       {"", "CenterCropPad", 18},   {"", "Col2Im", 18},
    {"", "GroupNormalization", 18}, {"", "Mish", 18},          {"", "DeformConv", 19},
    {"", "AffineGrid", 20},       {"", "Gelu", 20},            {"", "ImageDecoder", 20},
    {"", "RegexFullMatch", 20},   {"", "StringConcat", 20},    {"", "StringSplit", 20},
    {"", "Attention", 23},        {"", "RMSNormalization", 23}, {"", "RotaryEmbedding", 23},
    {"", "Swish", 24},            {"", "TensorScatter", 24},   {"ai.onnx.ml", "TreeEnsemble", 5},
};

int registry_max_version(const std::string& domain) {
  const auto& map = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  const auto it = map.find(domain);
  return it == map.end() ? 0 : it->second.second;
}

int clamp_version(std::int64_t version) {
  if (version < 1 || version > INT_MAX) return INT_MAX;  // missing or absurd: judge by the newest schema
  return static_cast<int>(version);
}

enum class OpStatus {
  Known,         // defined at the imported opset
  LaterOpset,    // a standard operator, but only from a later opset than the model imports
  LaterRelease,  // a standard operator of an ONNX release newer than this build's registry
  Unknown,       // no standard operator by that name
};

struct OpLookup {
  OpStatus status = OpStatus::Unknown;
  int since = 0;
};

OpLookup lookup_standard_op(const std::string& domain, const std::string& op, int version) {
  if (onnx::OpSchemaRegistry::Schema(op, version, domain) != nullptr) return {OpStatus::Known, 0};
  if (const auto* newest = onnx::OpSchemaRegistry::Schema(op, INT_MAX, domain)) {
    return {OpStatus::LaterOpset, newest->since_version()};
  }
  for (const auto& later : kLaterOps) {
    if (later.domain == domain && later.name == op) {
      if (version >= later.since) return {OpStatus::LaterRelease, later.since};
      return {OpStatus::LaterOpset, later.since};
    }
  }
  return {OpStatus::Unknown, 0};
}

bool is_standard_op_name(const std::string& domain, const std::string& op) {
  if (onnx::OpSchemaRegistry::Schema(op, INT_MAX, domain) != nullptr) return true;
  return std::any_of(std::begin(kLaterOps), std::end(kLaterOps),
                     [&](const LaterOp& later) { return later.domain == domain && later.name == op; });
}

// ---------------------------------------------------------------------------------------------
// Tensors

std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

// Bits per element by TensorProto.DataType, including the 8- and 4-bit types of later ONNX
// releases. STRING counts one byte per element: a lower bound of what a runtime allocates.
std::optional<std::uint64_t> element_bits(int data_type) {
  switch (data_type) {
    case 2: case 3: case 8: case 9: case 17: case 18: case 19: case 20: return 8;
    case 4: case 5: case 10: case 16: return 16;
    case 1: case 6: case 12: return 32;
    case 7: case 11: case 13: case 14: return 64;
    case 15: return 128;
    case 21: case 22: case 23: return 4;
    default: return std::nullopt;
  }
}

std::string data_type_name(int data_type) {
  static constexpr const char* kNames[] = {
      "UNDEFINED", "FLOAT",  "UINT8",  "INT8",      "UINT16",     "INT16",      "INT32",
      "INT64",     "STRING", "BOOL",   "FLOAT16",   "DOUBLE",     "UINT32",     "UINT64",
      "COMPLEX64", "COMPLEX128", "BFLOAT16", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2",
      "FLOAT8E5M2FNUZ", "UINT4", "INT4", "FLOAT4E2M1"};
  if (data_type >= 0 && static_cast<std::size_t>(data_type) < std::size(kNames)) return kNames[data_type];
  return "data type " + std::to_string(data_type);
}

// Typed-field values per element for the types whose typed storage is unambiguous; nullopt
// otherwise (the 4-bit types pack values, unknown types have no rule).
struct TypedCount {
  std::uint64_t present = 0;
  std::uint64_t per_element = 1;
};
std::optional<TypedCount> typed_count(const onnx::TensorProto& tensor) {
  const auto size = [](int n) { return static_cast<std::uint64_t>(n); };
  switch (tensor.data_type()) {
    case 1: return TypedCount{size(tensor.float_data_size()), 1};
    case 14: return TypedCount{size(tensor.float_data_size()), 2};
    case 2: case 3: case 4: case 5: case 6: case 9: case 10: case 16: case 17: case 18: case 19: case 20:
      return TypedCount{size(tensor.int32_data_size()), 1};
    case 7: return TypedCount{size(tensor.int64_data_size()), 1};
    case 8: return TypedCount{size(tensor.string_data_size()), 1};
    case 11: return TypedCount{size(tensor.double_data_size()), 1};
    case 15: return TypedCount{size(tensor.double_data_size()), 2};
    case 12: case 13: return TypedCount{size(tensor.uint64_data_size()), 1};
    default: return std::nullopt;
  }
}

std::string dims_text(const google::protobuf::RepeatedField<std::int64_t>& dims) {
  std::string out = "[";
  for (int i = 0; i < dims.size(); ++i) {
    if (i) out += ", ";
    if (i == 16) {
      out += "... " + std::to_string(dims.size() - 16) + " more";
      break;
    }
    out += std::to_string(dims.Get(i));
  }
  return out + "]";
}

// A non-negative decimal integer as written in external_data; nullopt for anything else.
std::optional<std::int64_t> parse_integer(std::string_view text, bool& negative) {
  negative = false;
  if (!text.empty() && text.front() == '-') {
    negative = true;
    text.remove_prefix(1);
  }
  if (text.empty() || text.size() > 19) return std::nullopt;
  std::int64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    if (value > (std::numeric_limits<std::int64_t>::max() - (c - '0')) / 10) return std::nullopt;
    value = value * 10 + (c - '0');
  }
  return negative ? -value : value;
}

// ---------------------------------------------------------------------------------------------
// External-data paths

// Windows drops trailing dots and spaces from a path component, so ".. " and "..." name the parent.
bool is_parent_component(std::string_view component) {
  std::size_t dots = 0;
  for (const char c : component) {
    if (c == '.') ++dots;
    else if (c != ' ') return false;
  }
  return dots >= 2;
}

// Why `location` leaves the model folder by its text alone (both '/' and '\' separate, as on
// Windows); empty when it stays inside.
std::string lexical_escape(std::string_view location) {
  if (location.empty()) return {};
  const auto is_sep = [](char c) { return c == '/' || c == '\\'; };
  if (is_sep(location[0])) {
    if (location.size() > 1 && is_sep(location[1])) return "is a UNC or device path";
    return "is an absolute path";
  }
  const auto first = static_cast<unsigned char>(location[0]);
  if (location.size() >= 2 && ((first | 0x20) >= 'a' && (first | 0x20) <= 'z') && location[1] == ':') {
    return "names a Windows drive";
  }
  long depth = 0;
  std::size_t start = 0;
  while (start <= location.size()) {
    std::size_t end = start;
    while (end < location.size() && !is_sep(location[end])) ++end;
    const std::string_view component = location.substr(start, end - start);
    if (is_parent_component(component)) {
      if (--depth < 0) return "climbs out of the model folder with '..'";
    } else if (!component.empty() && component != ".") {
      ++depth;
    }
    start = end + 1;
  }
  return {};
}

bool is_within(const fs::path& base, const fs::path& target) {
  auto b = base.begin();
  auto t = target.begin();
  for (; b != base.end(); ++b, ++t) {
    if (b->empty() && std::next(b) == base.end()) return true;  // base written with a trailing separator
    if (t == target.end() || *b != *t) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// The walk

class OnnxAnalyzer {
 public:
  OnnxAnalyzer(const onnx::ModelProto& model, const fs::path& model_dir, const OnnxOptions& options, OnnxInfo& info)
      : model_(model), model_dir_(model_dir), options_(options), info_(info) {}

  void run() {
    info_.ir_version = model_.ir_version();
    info_.producer = printable(model_.producer_name(), 200);
    if (!model_.producer_version().empty()) info_.producer += " " + printable(model_.producer_version(), 60);
    for (const auto& opset : model_.opset_import()) {
      info_.opsets.emplace_back(printable(opset.domain(), 200), opset.version());
      const std::string domain = canonical_domain(opset.domain());
      model_opsets_.emplace(domain, opset.version());
      note_import(domain, opset.version(), "model opset_import");
    }
    info_.functions = static_cast<std::size_t>(model_.functions_size());
    for (const auto& function : model_.functions()) {
      local_functions_.emplace(canonical_domain(function.domain()), function.name());
      function_domains_.insert(canonical_domain(function.domain()));
    }

    if (!model_.has_graph()) {
      add({"onnx.unreadable", Severity::High, "ONNX model has no graph",
           "the bytes parse as a protobuf ModelProto (ir_version " + std::to_string(model_.ir_version()) +
               ") but carry no graph, so no ONNX loader can use them",
           "", std::nullopt, "Treat the file as corrupt or disguised; obtain the model again from a trusted source.",
           IssueClass::Container});
    } else {
      Names main_names;
      const std::string where = "graph " + in_quotes(model_.graph().name());
      visit_graph(model_.graph(), where, 0, nullptr, model_opsets_, &main_names);
      const Scope main_scope{&main_names, nullptr};
      for (int i = 0; i < model_.training_info_size(); ++i) {
        const auto& training = model_.training_info(i);
        const std::string at = "training_info[" + std::to_string(i) + "]";
        if (training.has_initialization()) {
          visit_graph(training.initialization(), at + " > initialization", 0, &main_scope, model_opsets_, nullptr);
        }
        if (training.has_algorithm()) {
          visit_graph(training.algorithm(), at + " > algorithm", 0, &main_scope, model_opsets_, nullptr);
        }
      }
    }
    for (const auto& function : model_.functions()) visit_function(function);

    report_shadowing_functions();
    report_domains();
    report_external();
  }

  // Sorted by severity (stable, so the walk's order stays within a grade), then capped.
  void finish() {
    std::stable_sort(pending_.begin(), pending_.end(), [](const FormatIssue& a, const FormatIssue& b) {
      return static_cast<int>(a.severity) > static_cast<int>(b.severity);
    });
    if (pending_.size() > kMaxIssuesPerFile) pending_.resize(kMaxIssuesPerFile);
    info_.issues = std::move(pending_);
  }

  void add(FormatIssue issue) {
    std::size_t& count = per_rule_[issue.rule];
    if (count >= kMaxPendingPerRule) return;
    ++count;
    pending_.push_back(std::move(issue));
  }

 private:
  using Names = std::unordered_set<std::string>;
  using Opsets = std::map<std::string, std::int64_t>;  // canonical domain -> imported version

  // Values visible to a graph: its own, then those of the graphs around it (ONNX outer scope).
  struct Scope {
    const Names* names = nullptr;
    const Scope* outer = nullptr;
  };

  struct DomainUse {
    std::optional<std::int64_t> imported;
    std::string imported_by;
    std::map<std::string, std::size_t> native_ops;  // ops no local function defines
    std::map<std::string, std::size_t> local_ops;   // ops resolved to model-local functions
    std::string first_native_where;
    std::string first_local_where;
  };

  struct ExternalRef {
    std::vector<std::string> tensors;  // printable names, first kMaxListed
    std::size_t count = 0;
    std::string first_where;
    std::string reason;
  };

  static bool in_scope(const std::string& name, const Scope* scope) {
    for (; scope != nullptr; scope = scope->outer) {
      if (scope->names->count(name)) return true;
    }
    return false;
  }

  static std::string node_label(const onnx::NodeProto& node, int index) {
    const std::string op = op_key(canonical_domain(node.domain()), node.op_type());
    const std::string name = node.name().empty() ? "#" + std::to_string(index) : in_quotes(node.name());
    return "node " + name + " (" + printable(op) + ")";
  }

  void note_import(const std::string& domain, std::int64_t version, const std::string& by) {
    if (is_standard_domain(domain)) return;
    DomainUse& use = domains_[domain];
    if (!use.imported) {
      use.imported = version;
      use.imported_by = by;
    }
  }

  // ---- graphs and nodes ----------------------------------------------------------------------

  void visit_graph(const onnx::GraphProto& graph, const std::string& where, std::size_t depth, const Scope* outer,
                   const Opsets& opsets, Names* names_out) {
    if (depth > options_.max_graph_depth) {
      if (!reported_depth_) {
        reported_depth_ = true;
        add({"onnx.graph-too-deep", Severity::Medium, "ONNX subgraphs nest deeper than " +
                                                          std::to_string(options_.max_graph_depth) + " levels",
             "control-flow subgraphs (If/Loop/Scan bodies) are nested more than " +
                 std::to_string(options_.max_graph_depth) +
                 " levels deep; graphs below that depth were not examined, and runtimes recurse once per level",
             where, std::nullopt,
             "Review why the model nests control flow this deeply; treat it as untrusted until the inner graphs are "
             "inspected.",
             IssueClass::Container});
      }
      return;
    }

    Names local;
    Names& names = names_out ? *names_out : local;
    for (const auto& input : graph.input()) names.insert(input.name());
    for (const auto& initializer : graph.initializer()) names.insert(initializer.name());
    for (const auto& sparse : graph.sparse_initializer()) names.insert(sparse.values().name());
    for (const auto& node : graph.node()) {
      for (const auto& output : node.output()) {
        if (!output.empty()) names.insert(output);
      }
    }
    const Scope scope{&names, outer};

    info_.initializers += static_cast<std::size_t>(graph.initializer_size() + graph.sparse_initializer_size());
    for (const auto& initializer : graph.initializer()) {
      check_tensor(initializer, where + " > initializer " + in_quotes(initializer.name()));
    }
    for (const auto& sparse : graph.sparse_initializer()) {
      check_sparse(sparse, where + " > sparse initializer " + in_quotes(sparse.values().name()));
    }

    std::set<std::string> reported_missing;
    for (int i = 0; i < graph.node_size(); ++i) {
      const auto& node = graph.node(i);
      const std::string node_where = where + " > " + node_label(node, i);
      visit_node(node, node_where, depth, scope, opsets);
      for (const auto& input : node.input()) {
        if (input.empty() || in_scope(input, &scope) || !reported_missing.insert(input).second) continue;
        add({"onnx.missing-initializer", Severity::Medium,
             "ONNX " + node_label(node, i) + " reads " + in_quotes(input) + ", which nothing provides",
             "input " + in_quotes(input) + " of " + node_label(node, i) + " is not a graph input, an initializer, " +
                 (outer ? "a node output, or an outer-scope value" : "or a node output") + " in " + where,
             node_where, std::nullopt,
             "Re-export the model; a graph that reads undefined values fails to load or is filled in by a "
             "runtime-specific rule.",
             IssueClass::Container});
      }
    }
    for (const auto& output : graph.output()) {
      if (in_scope(output.name(), &scope) || !reported_missing.insert(output.name()).second) continue;
      add({"onnx.missing-initializer", Severity::Medium,
           "ONNX graph output " + in_quotes(output.name()) + " is never produced",
           "graph output " + in_quotes(output.name()) + " of " + where +
               " is not a graph input, an initializer, or any node's output",
           where, std::nullopt, "Re-export the model; its declared outputs must be computed by the graph.",
           IssueClass::Container});
    }
  }

  void visit_node(const onnx::NodeProto& node, const std::string& where, std::size_t depth, const Scope& scope,
                  const Opsets& opsets) {
    ++info_.nodes;
    const std::string domain = canonical_domain(node.domain());
    const std::string key = op_key(domain, node.op_type());
    if (info_.op_counts.size() < kMaxOpKeys || info_.op_counts.count(key)) ++info_.op_counts[key];

    const bool local = local_functions_.count({domain, node.op_type()}) > 0;
    if (!is_standard_domain(domain)) {
      DomainUse& use = domains_[domain];
      auto& ops = local ? use.local_ops : use.native_ops;
      std::string& first = local ? use.first_local_where : use.first_native_where;
      if (ops.size() < kMaxOpKeys || ops.count(node.op_type())) ++ops[node.op_type()];
      if (first.empty()) first = where;
    } else if (!local) {
      check_standard_op(domain, node.op_type(), where, opsets);
    }

    for (const auto& attribute : node.attribute()) {
      const std::string at = where + " > " + printable(attribute.name());
      if (attribute.has_t()) check_tensor(attribute.t(), at);
      for (int i = 0; i < attribute.tensors_size(); ++i) {
        check_tensor(attribute.tensors(i), at + "[" + std::to_string(i) + "]");
      }
      if (attribute.has_sparse_tensor()) check_sparse(attribute.sparse_tensor(), at);
      for (int i = 0; i < attribute.sparse_tensors_size(); ++i) {
        check_sparse(attribute.sparse_tensors(i), at + "[" + std::to_string(i) + "]");
      }
      // Read whatever subgraphs are present, whatever `type` claims: a loader may go by either.
      if (attribute.has_g()) visit_graph(attribute.g(), at, depth + 1, &scope, opsets, nullptr);
      for (int i = 0; i < attribute.graphs_size(); ++i) {
        visit_graph(attribute.graphs(i), at + "[" + std::to_string(i) + "]", depth + 1, &scope, opsets, nullptr);
      }
    }
  }

  void check_standard_op(const std::string& domain, const std::string& op, const std::string& where,
                         const Opsets& opsets) {
    const auto imported = opsets.find(domain);
    const int version = clamp_version(imported == opsets.end() ? 0 : imported->second);
    const OpLookup found = lookup_standard_op(domain, op, version);
    if (found.status == OpStatus::Known || found.status == OpStatus::LaterRelease) return;
    if (!reported_ops_.insert(domain + '\n' + op + '\n' + std::to_string(version)).second) return;

    const std::string imported_text = imported == opsets.end()
                                          ? "the model does not import " + domain_label(domain)
                                          : "the model imports opset " + std::to_string(imported->second) + " of " +
                                                domain_label(domain);
    if (found.status == OpStatus::LaterOpset) {
      add({"onnx.unknown-operator", Severity::Medium,
           "ONNX operator " + printable(op_key(domain, op)) + " is used below the opset that defines it",
           "op " + in_quotes(op) + " exists in " + domain_label(domain) + " only from opset " +
               std::to_string(found.since) + "; " + imported_text,
           where, std::nullopt,
           "Re-export the model with a consistent opset_import; runtimes reject or reinterpret such nodes.",
           IssueClass::Container});
      return;
    }
    const int known = registry_max_version(domain);
    add({"onnx.unknown-operator", Severity::High,
         "ONNX node uses " + printable(op_key(domain, op)) + ", which is not a standard operator",
         "op " + in_quotes(op) + " is not in the ONNX operator registry for " + domain_label(domain) +
             (known > 0 ? " (this build knows opsets up to " + std::to_string(known) + ")" : "") + "; " +
             imported_text + ", and no model-local function defines it",
         where, std::nullopt,
         "Do not run the model unless the operator is accounted for: a runtime either refuses it or runs whatever "
         "kernel an execution provider or plugged-in library registered under that name.",
         IssueClass::Code});
  }

  void visit_function(const onnx::FunctionProto& function) {
    const std::string domain = canonical_domain(function.domain());
    const std::string where = "function " + in_quotes(op_key(domain, function.name()));
    Opsets opsets;
    for (const auto& opset : function.opset_import()) {
      const std::string imported = canonical_domain(opset.domain());
      opsets.emplace(imported, opset.version());
      note_import(imported, opset.version(), where + " opset_import");
    }
    for (const auto& [imported, version] : model_opsets_) opsets.emplace(imported, version);

    Names names;
    for (const auto& input : function.input()) names.insert(input);
    for (const auto& node : function.node()) {
      for (const auto& output : node.output()) {
        if (!output.empty()) names.insert(output);
      }
    }
    const Scope scope{&names, nullptr};
    std::set<std::string> reported_missing;
    for (int i = 0; i < function.node_size(); ++i) {
      const auto& node = function.node(i);
      const std::string node_where = where + " > " + node_label(node, i);
      visit_node(node, node_where, 0, scope, opsets);
      for (const auto& input : node.input()) {
        if (input.empty() || names.count(input) || !reported_missing.insert(input).second) continue;
        add({"onnx.missing-initializer", Severity::Medium,
             "ONNX " + node_label(node, i) + " in " + where + " reads " + in_quotes(input) + ", which nothing provides",
             "input " + in_quotes(input) + " of " + node_label(node, i) +
                 " is not a function input or the output of a node in " + where,
             node_where, std::nullopt, "Re-export the model; a function body must define every value it reads.",
             IssueClass::Container});
      }
    }
    for (const auto& output : function.output()) {
      if (names.count(output) || !reported_missing.insert(output).second) continue;
      add({"onnx.missing-initializer", Severity::Medium,
           "ONNX " + where + " never produces its output " + in_quotes(output),
           "output " + in_quotes(output) + " of " + where + " is not a function input or any node's output", where,
           std::nullopt, "Re-export the model; a function body must compute its declared outputs.",
           IssueClass::Container});
    }
  }

  // ---- tensors -------------------------------------------------------------------------------

  // Declared element count and byte size, or a reported issue (nullopt) when they are negative,
  // overflow or exceed the budget.
  struct Declared {
    std::uint64_t elements = 1;
    std::optional<std::uint64_t> bytes;  // nullopt for an unknown data type
  };

  std::optional<Declared> check_declared(const google::protobuf::RepeatedField<std::int64_t>& dims, int data_type,
                                         const std::string& name, const std::string& where) {
    const auto oversized = [&](const std::string& title, const std::string& detail) {
      add({"onnx.oversized-tensor", Severity::High, title,
           "tensor " + in_quotes(name) + " of " + data_type_name(data_type) + " declares dims " + dims_text(dims) +
               ": " + detail,
           where, std::nullopt,
           "Do not load the model: a runtime that allocates the declared shape exhausts memory or miscomputes a "
           "buffer size. Re-export it from a trusted source.",
           IssueClass::Container});
      return std::nullopt;
    };
    Declared declared;
    bool overflow = false;
    for (const std::int64_t dim : dims) {
      if (dim < 0) {
        return oversized("ONNX tensor " + in_quotes(name) + " declares a negative dimension",
                         "dimension " + std::to_string(dim) + " is negative");
      }
      if (const auto product = checked_mul(declared.elements, static_cast<std::uint64_t>(dim))) {
        declared.elements = *product;
      } else {
        overflow = true;
      }
    }
    if (overflow) {
      return oversized("ONNX tensor " + in_quotes(name) + " declares more elements than 64 bits can count",
                       "the product of the dimensions overflows 64 bits");
    }
    const auto bits = element_bits(data_type);
    const auto total_bits = checked_mul(declared.elements, bits.value_or(8));
    if (!total_bits) {
      return oversized("ONNX tensor " + in_quotes(name) + " declares more bytes than 64 bits can count",
                       std::to_string(declared.elements) + " elements overflow a 64-bit byte count");
    }
    const std::uint64_t bytes = *total_bits / 8 + (*total_bits % 8 != 0);
    if (bytes > options_.max_tensor_bytes) {
      return oversized("ONNX tensor " + in_quotes(name) + " declares " + human_bytes(bytes) + ", over the " +
                           human_bytes(options_.max_tensor_bytes) + " limit",
                       std::to_string(declared.elements) + " elements, " + std::to_string(bytes) + " bytes");
    }
    if (bits) declared.bytes = bytes;
    return declared;
  }

  void size_mismatch(const onnx::TensorProto& tensor, const std::string& where, const std::string& detail) {
    add({"onnx.tensor-size-mismatch", Severity::Medium,
         "ONNX tensor " + in_quotes(tensor.name()) + " holds a different amount of data than its shape declares",
         "tensor " + in_quotes(tensor.name()) + " of " + data_type_name(tensor.data_type()) + " with dims " +
             dims_text(tensor.dims()) + ": " + detail,
         where, std::nullopt,
         "Re-export the model; loaders disagree on how to read a tensor whose data and shape differ, and some read "
         "past the buffer.",
         IssueClass::Container});
  }

  void check_tensor(const onnx::TensorProto& tensor, const std::string& where) {
    const auto declared = check_declared(tensor.dims(), tensor.data_type(), tensor.name(), where);
    const bool external = tensor.data_location() == onnx::TensorProto::EXTERNAL;
    if (external) check_external(tensor, where, declared ? declared->bytes : std::nullopt);
    if (!declared || external || tensor.has_segment()) return;

    if (tensor.has_raw_data()) {
      if (tensor.data_type() == onnx::TensorProto::STRING) {
        size_mismatch(tensor, where, "a STRING tensor carries raw_data, which loaders do not define");
      } else if (declared->bytes && tensor.raw_data().size() != *declared->bytes) {
        size_mismatch(tensor, where,
                      "raw_data holds " + std::to_string(tensor.raw_data().size()) + " bytes where the shape needs " +
                          std::to_string(*declared->bytes));
      }
      return;
    }
    const auto typed = typed_count(tensor);
    if (!typed) return;
    const auto expected = checked_mul(declared->elements, typed->per_element);
    if (expected && typed->present != *expected) {
      size_mismatch(tensor, where,
                    std::to_string(typed->present) + " typed values where the shape needs " +
                        std::to_string(*expected));
    }
  }

  void check_sparse(const onnx::SparseTensorProto& sparse, const std::string& where) {
    // Runtimes densify sparse initializers, so the dense shape is what gets allocated.
    check_declared(sparse.dims(), sparse.values().data_type(), sparse.values().name(), where + " (dense shape)");
    if (sparse.has_values()) check_tensor(sparse.values(), where + " > values");
    if (sparse.has_indices()) check_tensor(sparse.indices(), where + " > indices");
  }

  // ---- external data -------------------------------------------------------------------------

  static void remember(std::map<std::string, ExternalRef>& refs, const std::string& location,
                       const onnx::TensorProto& tensor, const std::string& where, const std::string& reason) {
    if (refs.size() >= kMaxIssuesPerFile && !refs.count(location)) return;
    ExternalRef& ref = refs[location];
    if (ref.tensors.size() < kMaxListed) ref.tensors.push_back(in_quotes(tensor.name()));
    if (ref.count++ == 0) {
      ref.first_where = where;
      ref.reason = reason;
    }
  }

  // Why `location` leaves the model folder, or empty. A NUL ends the path for the C library, so
  // the text before it is judged too.
  std::string escape_reason(const std::string& location) {
    std::string reason = lexical_escape(location);
    const std::size_t nul = location.find('\0');
    if (reason.empty() && nul != std::string::npos) {
      reason = lexical_escape(std::string_view(location).substr(0, nul));
      if (!reason.empty()) reason += " once cut at its NUL byte, as the C library reads it";
    }
    if (!reason.empty() || model_dir_.empty()) return reason;

    // Inside by its text: follow symbolic links that exist on disk.
    std::error_code ec;
    const fs::path base = fs::weakly_canonical(model_dir_, ec);
    if (ec) return {};
    const fs::path path = model_dir_ / fs::path(location.substr(0, nul));
    const fs::path target = fs::weakly_canonical(path, ec);
    if (!ec && !is_within(base, target)) return "resolves through a symbolic link to " + in_quotes(target.string());
    // weakly_canonical leaves a dangling link unresolved; where it points still matters.
    if (fs::is_symlink(fs::symlink_status(path, ec))) {
      const fs::path link = fs::read_symlink(path, ec);
      if (ec) return {};
      const fs::path pointed = (path.parent_path() / link).lexically_normal();
      const fs::path parent = fs::weakly_canonical(path.parent_path(), ec);
      if (ec) return {};
      const fs::path resolved = (parent / link).lexically_normal();
      if (!is_within(base, link.is_absolute() ? link.lexically_normal() : resolved)) {
        return "is a symbolic link to " + in_quotes(pointed.string()) + ", outside the model folder";
      }
    }
    return {};
  }

  // Size of the external file, or the reason it cannot be read (cached per location).
  struct Probe {
    std::optional<std::uint64_t> size;
    std::string problem;
  };

  std::optional<Probe> probe(const std::string& location) {
    if (const auto it = probes_.find(location); it != probes_.end()) return it->second;
    if (probes_.size() >= kMaxProbedFiles) return std::nullopt;
    Probe result;
    std::error_code ec;
    const fs::path path = model_dir_ / fs::path(location.substr(0, location.find('\0')));
    const fs::file_status status = fs::status(path, ec);
    if (ec || !fs::exists(status)) {
      result.problem = "does not exist";
    } else if (!fs::is_regular_file(status)) {
      result.problem = "is not a regular file";
    } else {
      const std::uintmax_t size = fs::file_size(path, ec);
      if (ec) result.problem = "cannot be read (" + ec.message() + ")";
      else result.size = size;
    }
    probes_.emplace(location, result);
    return result;
  }

  void bounds_issue(const onnx::TensorProto& tensor, const std::string& where, const std::string& location,
                    const std::string& detail) {
    add({"onnx.external-data-bounds", Severity::Medium,
         "ONNX tensor " + in_quotes(tensor.name()) + " points outside its external data file",
         "tensor " + in_quotes(tensor.name()) + " reads " + in_quotes(location) + ": " + detail, where, std::nullopt,
         "Re-export the model with its external data; a loader reading this range fails or reads the wrong bytes.",
         IssueClass::Container});
  }

  void check_external(const onnx::TensorProto& tensor, const std::string& where,
                      std::optional<std::uint64_t> declared_bytes) {
    std::vector<const std::string*> locations;
    const std::string* offset_text = nullptr;
    const std::string* length_text = nullptr;
    for (const auto& entry : tensor.external_data()) {
      if (entry.key() == "location") locations.push_back(&entry.value());
      else if (entry.key() == "offset") offset_text = &entry.value();
      else if (entry.key() == "length") length_text = &entry.value();
    }
    if (locations.empty() || locations.back()->empty()) {
      remember(missing_, "", tensor, where, "declares external data without a location");
      return;
    }
    // Loaders keep the last "location"; every one is judged, in case another reader keeps the first.
    bool escapes = false;
    for (const std::string* location : locations) {
      const std::string reason = escape_reason(*location);
      if (reason.empty()) continue;
      remember(escapes_, *location, tensor, where, reason);
      escapes = true;
    }
    const std::string& location = *locations.back();
    if (info_.external_files.size() < kMaxExternalFiles && external_seen_.insert(location).second) {
      info_.external_files.push_back(printable(location, 400));
    }
    if (escapes) return;

    std::optional<std::int64_t> offset;
    std::optional<std::int64_t> length;
    for (const auto& [text, out, label] :
         {std::tuple{offset_text, &offset, "offset"}, std::tuple{length_text, &length, "length"}}) {
      if (text == nullptr) continue;
      bool negative = false;
      *out = parse_integer(*text, negative);
      if (!*out) {
        bounds_issue(tensor, where, location,
                     std::string(label) + " " + in_quotes(*text) + " is not a decimal number that fits 64 bits");
        return;
      }
      if (negative) {
        bounds_issue(tensor, where, location, std::string(label) + " " + std::to_string(**out) + " is negative");
        return;
      }
    }
    if (length && declared_bytes && static_cast<std::uint64_t>(*length) != *declared_bytes) {
      size_mismatch(tensor, where,
                    "external data length " + std::to_string(*length) + " where the shape needs " +
                        std::to_string(*declared_bytes) + " bytes");
    }
    if (model_dir_.empty()) return;  // inside an archive: nothing on disk to compare with

    const auto probed = probe(location);
    if (!probed) return;
    if (!probed->size) {
      remember(missing_, location, tensor, where, probed->problem);
      return;
    }
    const std::uint64_t size = *probed->size;
    const std::uint64_t start = offset ? static_cast<std::uint64_t>(*offset) : 0;
    if (start > size) {
      bounds_issue(tensor, where, location,
                   "offset " + std::to_string(start) + " is past the end of the " + std::to_string(size) +
                       "-byte file");
    } else if (length && static_cast<std::uint64_t>(*length) > size - start) {
      bounds_issue(tensor, where, location,
                   "offset " + std::to_string(start) + " + length " + std::to_string(*length) +
                       " runs past the end of the " + std::to_string(size) + "-byte file");
    }
  }

  // ---- model-level reports -------------------------------------------------------------------

  void report_external() {
    for (const auto& [location, ref] : escapes_) {
      const std::string subject =
          ref.count == 1 ? "ONNX tensor " + ref.tensors.front() : std::to_string(ref.count) + " ONNX tensors";
      add({"onnx.external-data-escape", Severity::Critical,
           subject + (ref.count == 1 ? " reads" : " read") + " external data from " + in_quotes(location) +
               ", outside the model folder",
           "external_data location " + in_quotes(location) + " " + ref.reason + "; tensors: " +
               joined(ref.tensors, ref.count),
           ref.first_where, std::nullopt,
           "Do not load this model: ONNX loaders read the named file into the tensor, so the model can pull "
           "local secrets (or device files) into its weights and outputs. External data must be a relative path "
           "inside the model's folder.",
           IssueClass::Code});
    }
    for (const auto& [location, ref] : missing_) {
      const std::string target = location.empty() ? std::string("no file") : in_quotes(location);
      add({"onnx.external-data-missing", Severity::Medium,
           location.empty() ? "ONNX tensor external data names no file"
                            : "ONNX external data file " + in_quotes(location) + " " + ref.reason,
           "tensors reading " + target + ": " + joined(ref.tensors, ref.count) + "; " +
               (location.empty() ? ref.reason : "looked for in " + in_quotes(model_dir_.string())),
           ref.first_where, std::nullopt,
           "Ship the external data files beside the model (same folder, relative names), or re-export the model "
           "with its weights embedded.",
           IssueClass::Container});
    }
  }

  void report_shadowing_functions() {
    std::set<std::pair<std::string, std::string>> reported;
    for (const auto& function : model_.functions()) {
      const std::string domain = canonical_domain(function.domain());
      if (!is_standard_domain(domain) || !is_standard_op_name(domain, function.name())) continue;
      if (!reported.emplace(domain, function.name()).second) continue;
      std::vector<std::string> body;
      for (const auto& node : function.node()) {
        if (body.size() >= kMaxListed) break;
        body.push_back(printable(op_key(canonical_domain(node.domain()), node.op_type())));
      }
      add({"onnx.function-shadows-standard-op", Severity::High,
           "Model-local function " + in_quotes(op_key(domain, function.name())) +
               " replaces the standard ONNX operator of that name",
           "function " + in_quotes(function.name()) + " in " + domain_label(domain) + " has " +
               std::to_string(function.node_size()) + " node(s): " +
               joined(body, static_cast<std::size_t>(function.node_size())) +
               "; tools that expand model functions run this body where the graph asks for the standard operator",
           "function " + in_quotes(op_key(domain, function.name())), std::nullopt,
           "Do not trust the model's results: inspect the function body, and re-export the model without functions "
           "in the standard ONNX domains.",
           IssueClass::Code});
    }
  }

  static std::string ops_text(const std::string& domain, const std::map<std::string, std::size_t>& ops) {
    std::vector<std::string> listed;
    for (const auto& [op, count] : ops) {
      if (listed.size() >= kMaxListed) break;
      listed.push_back(printable(op_key(domain, op)) + " (" + std::to_string(count) + " node" +
                       (count == 1 ? "" : "s") + ")");
    }
    return joined(listed, ops.size());
  }

  void report_domains() {
    for (const auto& [domain, use] : domains_) {
      const bool defined_locally = function_domains_.count(domain) > 0;
      const std::string imported = use.imported ? "imported at version " + std::to_string(*use.imported) + " by " +
                                                      use.imported_by
                                                : std::string("not listed in opset_import");
      if (!use.local_ops.empty()) {
        add({"onnx.local-function", Severity::Low,
             "ONNX model calls functions it defines itself in " + domain_label(domain),
             domain_label(domain) + " (" + imported + ") is defined by model-local functions; calls: " +
                 ops_text(domain, use.local_ops),
             use.first_local_where, std::nullopt,
             "Review the function bodies (they run as ordinary ONNX operators, not native code).",
             IssueClass::Code});
      }
      if (use.native_ops.empty() && (defined_locally || !use.local_ops.empty())) continue;

      const bool microsoft = domain == kMicrosoftDomain;
      const std::string title =
          use.native_ops.empty()
              ? "ONNX model imports custom operator domain " + in_quotes(domain)
              : "ONNX model uses operators from custom domain " + in_quotes(domain) + " that need native kernels";
      const std::string ops = use.native_ops.empty() ? std::string("no node uses it")
                                                     : "ops used: " + ops_text(domain, use.native_ops);
      const std::string where = use.first_native_where.empty() ? use.imported_by : use.first_native_where;
      add({"onnx.custom-domain", microsoft ? Severity::Medium : Severity::High, title,
           domain_label(domain) + " (" + imported + "); " + ops +
               (microsoft ? "; these are ONNX Runtime contrib operators, built into ONNX Runtime"
                          : "; runtimes run such operators with kernels from a native library registered for the "
                            "domain"),
           where, std::nullopt,
           microsoft ? "Expect the model to run only on ONNX Runtime; confirm the contrib operators are intended."
                     : "Do not register custom-op libraries for this model unless you trust and have reviewed them: "
                       "a custom domain means native code chosen by whoever supplies the library.",
           IssueClass::Code});
    }
  }

  const onnx::ModelProto& model_;
  const fs::path& model_dir_;
  const OnnxOptions& options_;
  OnnxInfo& info_;

  std::vector<FormatIssue> pending_;
  std::map<std::string, std::size_t> per_rule_;
  Opsets model_opsets_;
  std::set<std::pair<std::string, std::string>> local_functions_;  // (canonical domain, name)
  std::set<std::string> function_domains_;
  std::map<std::string, DomainUse> domains_;  // non-standard domains, imported or used
  std::set<std::string> reported_ops_;
  bool reported_depth_ = false;
  std::map<std::string, ExternalRef> escapes_;
  std::map<std::string, ExternalRef> missing_;
  std::map<std::string, Probe> probes_;
  std::set<std::string> external_seen_;
};

FormatIssue unreadable(std::string evidence) {
  return {"onnx.unreadable", Severity::High, "File is not a readable ONNX model", std::move(evidence), "",
          std::nullopt,
          "Treat the file as corrupt or disguised; obtain the model again from a trusted source and verify its "
          "checksum.",
          IssueClass::Container};
}


}  // namespace

bool looks_like_onnx(std::span<const std::uint8_t> data) {
  std::size_t pos = 0;
  int fields = 0;
  bool anchored = false;  // saw ir_version in a plausible range, graph or opset_import
  bool reached_end = false;
  while (fields < 4 && pos < data.size()) {
    std::uint64_t tag = 0;
    if (!read_varint(data, pos, tag)) return false;
    const std::uint64_t field = tag >> 3;
    const std::uint64_t wire = tag & 7;
    switch (field) {
      case 1:    // ir_version
      case 5: {  // model_version
        std::uint64_t value = 0;
        if (wire != 0) return false;
        if (!read_varint(data, pos, value)) {
          reached_end = true;
          break;
        }
        if (field == 1) {
          if (value == 0 || value > 100) return false;
          anchored = true;
        }
        break;
      }
      case 2: case 3: case 4: case 6: case 7: case 8: case 14: case 20: case 25: {
        std::uint64_t length = 0;
        if (wire != 2) return false;
        if (!read_varint(data, pos, length)) {
          reached_end = true;
          break;
        }
        if (field == 7 || field == 8) anchored = true;
        if (length > data.size() - pos) {  // a prefix of a larger model, or a truncated one
          reached_end = true;
          pos = data.size();
        } else {
          pos += static_cast<std::size_t>(length);
        }
        break;
      }
      default:
        return false;
    }
    ++fields;
    if (reached_end) break;
  }
  if (pos >= data.size()) reached_end = true;
  return anchored && (fields >= 3 || (reached_end && fields >= 2));
}

OnnxInfo analyze_onnx(std::span<const std::uint8_t> data, const std::filesystem::path& model_dir,
                      const OnnxOptions& options) {
  OnnxInfo info;
  try {
    if (data.size() > static_cast<std::size_t>(INT_MAX)) {
      info.issues.push_back(unreadable("the file is " + std::to_string(data.size()) +
                                       " bytes; a protobuf ModelProto cannot exceed 2 GiB, so ONNX loaders refuse it "
                                       "(large models keep their weights in external data files)"));
      return info;
    }
    onnx::ModelProto model;
    if (!model.ParseFromArray(data.data(), static_cast<int>(data.size()))) {
      info.issues.push_back(unreadable("the " + std::to_string(data.size()) +
                                       " bytes do not parse as a protobuf ModelProto: the wire format is broken or "
                                       "truncated, or messages nest deeper than protobuf's recursion limit"));
      return info;
    }
    info.parsed = true;
    OnnxAnalyzer analyzer(model, model_dir, options, info);
    try {
      analyzer.run();
    } catch (const std::exception& e) {
      analyzer.add(unreadable(std::string("the analysis stopped part-way: ") + e.what()));
    }
    analyzer.finish();
  } catch (const std::exception& e) {
    if (info.issues.size() < kMaxIssuesPerFile) {
      info.issues.push_back(unreadable(std::string("the analysis stopped: ") + e.what()));
    }
  } catch (...) {
    if (info.issues.size() < kMaxIssuesPerFile) info.issues.push_back(unreadable("the analysis stopped"));
  }
  return info;
}

}  // namespace aegis::formats
