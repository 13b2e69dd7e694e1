// Grades the callables a pickle imports: allow-list first (decides what is safe), deny-list second
// (grades what is not as critical and says why), anything else is high and named.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace aegis::scan {

enum class CallableVerdict { Allowed, Denied, Unknown };

class CallablePolicy {
 public:
  // Loads the shipped tables (compiled into the library).
  CallablePolicy();

  // Adds a user's own allowed callable: "module.name", "module.*" or "module:Name".
  void allow(std::string_view dotted);
  // Reads an allow-list file: one dotted name per line, '#' comments. Throws core::Error.
  void allow_file(const std::string& path);

  // Grades module.name as Python 3's unpickler would resolve it: Python 2 module names renamed
  // (__builtin__ -> builtins), dotted names followed attribute by attribute.
  CallableVerdict classify(std::string_view module, std::string_view name) const;

  // The Python 3 module that the unpickler imports for a Python 2 module name (else the name itself).
  static std::string_view python3_module(std::string_view module);

 private:
  struct Rule {
    std::string module;       // exact module, or a prefix when subtree is set
    bool subtree = false;     // "pkg.*": the module and its submodules
    std::string name;         // exact name, "*" for any, "@class" for upper-case names
  };
  CallableVerdict classify_exact(std::string_view module, std::string_view name) const;
  static std::vector<Rule> parse_table(std::string_view text);
  // attribute_paths: "os.system" listed also covers "system.x" style dotted names (deny side only;
  // an allow rule never extends to attributes of what it allows).
  static bool matches(const Rule& rule, std::string_view module, std::string_view name, bool attribute_paths);

  std::vector<Rule> allowed_;
  std::vector<Rule> denied_;
};

}  // namespace aegis::scan
