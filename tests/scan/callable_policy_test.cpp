#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>

#include "aegis/core/error.h"
#include "aegis/scan/callable_policy.h"

namespace aegis::scan {
namespace {

TEST(CallablePolicy, AllowsWhatFrameworkLoadersNeed) {
  CallablePolicy policy;
  EXPECT_EQ(policy.classify("torch._utils", "_rebuild_tensor_v2"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("collections", "OrderedDict"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("torch", "FloatStorage"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("numpy.core.multiarray", "_reconstruct"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("joblib.numpy_pickle", "NumpyArrayWrapper"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("sklearn.linear_model._logistic", "LogisticRegression"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("builtins", "set"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("__torch__.my_module", "Net"), CallableVerdict::Allowed);
}

TEST(CallablePolicy, DeniesWhatRunsCode) {
  CallablePolicy policy;
  EXPECT_EQ(policy.classify("os", "system"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("posix", "system"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("subprocess", "Popen"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("builtins", "eval"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("builtins", "getattr"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("pip", "main"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("pip._internal.cli.main", "main"), CallableVerdict::Denied) << "submodules of a denied module";
  EXPECT_EQ(policy.classify("runpy", "run_path"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("torch", "load"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("joblib", "load"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("webbrowser", "open"), CallableVerdict::Denied);
}

TEST(CallablePolicy, AllowListWinsButNeverExtendsToAttributes) {
  CallablePolicy policy;
  // sklearn classes are allowed; a function of sklearn is not a class and is only "unknown"
  EXPECT_EQ(policy.classify("sklearn.utils", "load_something"), CallableVerdict::Unknown);
  // an allowed class does not allow its attributes
  EXPECT_EQ(policy.classify("collections", "OrderedDict.fromkeys"), CallableVerdict::Unknown);
  // builtins.set is allowed, builtins.set.x is denied through the builtins wildcard
  EXPECT_EQ(policy.classify("builtins", "set.__init__"), CallableVerdict::Denied);
}

TEST(CallablePolicy, UnknownIsNeitherAllowedNorDenied) {
  CallablePolicy policy;
  EXPECT_EQ(policy.classify("mylib.helpers", "load_config"), CallableVerdict::Unknown);
  EXPECT_EQ(policy.classify("ossystem", "x"), CallableVerdict::Unknown) << "module prefixes match whole components";
}

TEST(CallablePolicy, UserAllowsByNameModuleAndFile) {
  CallablePolicy policy;
  policy.allow("mylib.helpers.load_config");
  policy.allow("otherlib.*");
  EXPECT_EQ(policy.classify("mylib.helpers", "load_config"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("otherlib.sub", "Thing"), CallableVerdict::Allowed);
  EXPECT_THROW(policy.allow("nodots"), core::Error);

  std::string path = ::testing::TempDir() + "/allow.txt";
  {
    std::ofstream out(path);
    out << "# my classes\nproject.layers.Block\n\n";
  }
  policy.allow_file(path);
  EXPECT_EQ(policy.classify("project.layers", "Block"), CallableVerdict::Allowed);
  std::remove(path.c_str());
  EXPECT_THROW(policy.allow_file("/nonexistent/allow.txt"), core::Error);
}

}  // namespace
}  // namespace aegis::scan

namespace aegis::scan {
namespace {

TEST(CallablePolicy, Python2NamesAreGradedAsPython3ImportsThem) {
  CallablePolicy policy;
  EXPECT_EQ(CallablePolicy::python3_module("__builtin__"), "builtins");
  EXPECT_EQ(policy.classify("__builtin__", "eval"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("copy_reg", "_reconstructor"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("commands", "getoutput"), CallableVerdict::Denied);
}

TEST(CallablePolicy, DottedNamesAreFollowedAttributeByAttribute) {
  CallablePolicy policy;
  EXPECT_EQ(policy.classify("torch", "serialization.os.system"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("numpy", "core.multiarray.os.popen"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("mylib", "a.b.c"), CallableVerdict::Unknown);
  // a wildcard allow rule does not let a dotted name walk out of the allowed module
  EXPECT_EQ(policy.classify("torch.nn.functional", "relu"), CallableVerdict::Allowed);
  EXPECT_EQ(policy.classify("torch.nn.functional", "torch.serialization.os.system"), CallableVerdict::Denied);
  EXPECT_EQ(policy.classify("__torch__.m", "a.b"), CallableVerdict::Unknown);
}

}  // namespace
}  // namespace aegis::scan
