// The only translation unit (with onnx_classifier.cpp for OpenCV) that includes LibTorch: it is slow
// to compile, so everything else talks to it through classifier.h / torchscript_classifier.h.
#include "aegis/models/torchscript_classifier.h"

#include <dlfcn.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cmath>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "aegis/core/error.h"

namespace aegis::models {
namespace {

// Debian's LibTorch calls whatever libblas.so.3 is selected; OpenBLAS's own threads would fight
// LibTorch's, so they are pinned to one when OpenBLAS is the one loaded.
void keep_openblas_single_threaded() {
  using SetThreads = void (*)(int);
  if (auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

class TorchScriptClassifier : public TrainableClassifier {
 public:
  TorchScriptClassifier(const std::string& path, const TorchScriptOptions& options, const TrainingOptions& training)
      : training_(training), batch_(options.batch == 0 ? 128 : options.batch) {
    keep_openblas_single_threaded();
    // 0 means every core, as the flag says; LibTorch's own default here was one thread.
    const int threads = options.threads > 0 ? options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (torch::get_num_threads() != threads) torch::set_num_threads(threads);
    try {
      device_ = torch::Device(options.device);
    } catch (const std::exception&) {
      throw core::Error("unknown device '" + options.device + "'", "use cpu, cuda or cuda:N");
    }
    if (device_.is_cuda() && !torch::cuda::is_available())
      throw core::Error("--device " + options.device + " was asked for, but this build's LibTorch sees no CUDA device",
                        "run with --device cpu, or build Aegis against a CUDA LibTorch (see README, GPU) on a machine with a GPU");
    try {
      module_ = torch::jit::load(path, device_);
    } catch (const c10::Error& error) {
      std::string what = error.what_without_backtrace();
      if (what.size() > 300) what = what.substr(0, 300) + "…";
      throw core::Error("could not load '" + path + "' as TorchScript: " + what,
                        "export the model with torch.jit.script(model).save(path) or torch.jit.trace; a state_dict or a "
                        "pickled nn.Module is not TorchScript (scan it with `aegis scan` first)");
    }
    module_.eval();
    set_parameter_gradients(false);
    if (options.input_shape.empty())
      throw core::Error("TorchScript does not record its input shape",
                        "give it with --input-shape, e.g. --input-shape 1,28,28 (the data's sample shape is used when known)");
    info_.input_shape = options.input_shape;
    info_.backend = "torchscript";
    info_.source = path;
    info_.has_gradients = true;
    probe(options);
  }

  const ClassifierInfo& info() const override { return info_; }
  std::size_t preferred_batch() const override { return batch_; }

  double train_step(std::span<const float> x_clean, std::span<const float> x_adv, std::span<const int> labels,
                    TrainingObjective objective, double beta) override {
    const auto n = static_cast<std::int64_t>(labels.size());
    if (!optimizer_) make_optimizer();
    module_.train();
    set_parameter_gradients(true);
    optimizer_->zero_grad();
    auto target = torch::from_blob(const_cast<int*>(labels.data()), {n}, torch::kInt32).to(torch::kLong).to(device_);
    auto adv_logits = logits_of(forward(to_tensor(x_adv, n)));
    torch::Tensor loss;
    if (objective == TrainingObjective::CrossEntropy) {
      loss = torch::nn::functional::cross_entropy(adv_logits, target);
    } else {
      auto clean_logits = logits_of(forward(to_tensor(x_clean, n)));
      auto natural = torch::nn::functional::cross_entropy(clean_logits, target);
      auto kl = torch::nn::functional::kl_div(torch::log_softmax(adv_logits, 1), torch::softmax(clean_logits, 1),
                                              torch::nn::functional::KLDivFuncOptions().reduction(torch::kBatchMean));
      loss = natural + beta * kl;
    }
    if (proximal_mu_ > 0) loss = loss + proximal_penalty();
    loss.backward();
    optimizer_->step();
    module_.eval();
    set_parameter_gradients(false);
    return loss.item<double>();
  }

  double train_step_soft(std::span<const float> x, std::span<const float> target_probabilities) override {
    const auto n = static_cast<std::int64_t>(target_probabilities.size() / classes());
    if (!optimizer_) make_optimizer();
    module_.train();
    set_parameter_gradients(true);
    optimizer_->zero_grad();
    auto target = torch::from_blob(const_cast<float*>(target_probabilities.data()), {n, classes_i()}, torch::kFloat32)
                      .to(device_);
    auto log_p = torch::log_softmax(logits_of(forward(to_tensor(x, static_cast<std::size_t>(n)))), 1);
    auto loss = -(target * log_p).sum(1).mean();
    loss.backward();
    optimizer_->step();
    module_.eval();
    set_parameter_gradients(false);
    return loss.item<double>();
  }

  void reinitialize(std::uint64_t seed) override {
    torch::NoGradGuard no_grad;
    torch::manual_seed(seed);  // dropout masks in the training that follows
    auto generator = at::make_generator<at::CPUGeneratorImpl>(seed);
    auto uniform = [&](torch::Tensor& t, double bound) {
      // Drawn on the CPU so that a seed gives the same weights on every device.
      auto values = torch::empty(t.sizes(), torch::kFloat32).uniform_(-bound, bound, generator);
      t.copy_(values);
    };
    for (auto submodule : module_.modules()) {
      std::optional<torch::Tensor> weight, bias;
      for (const auto& p : submodule.named_parameters(/*recurse=*/false)) {
        if (p.name == "weight") weight = p.value;
        if (p.name == "bias") bias = p.value;
      }
      if (weight && weight->dim() >= 2) {
        const double fan_in = static_cast<double>(weight->numel() / weight->size(0));
        const double bound = 1.0 / std::sqrt(std::max(fan_in, 1.0));
        uniform(*weight, bound);
        if (bias) uniform(*bias, bound);
      } else if (weight && weight->dim() == 1) {
        weight->fill_(1.0);
        if (bias) bias->zero_();
      } else if (bias) {
        bias->zero_();
      }
      for (const auto& b : submodule.named_buffers(/*recurse=*/false)) {
        auto value = b.value;
        if (b.name == "running_mean") value.zero_();
        else if (b.name == "running_var") value.fill_(1.0);
        else if (b.name == "num_batches_tracked") value.zero_();
      }
    }
    optimizer_.reset();
    sequence_checked_ = false;
  }

  std::vector<std::string> layer_names() const override {
    std::vector<std::string> names;
    for (const auto& child : module_.named_children()) names.push_back(child.name);
    return names;
  }

  std::size_t activations(std::span<const float> inputs, const std::string& layer, std::vector<float>& features) override {
    const std::size_t n = inputs.size() / sample_size();
    features.clear();
    std::size_t width = 0;
    torch::InferenceMode guard;
    for (std::size_t start = 0; start < n; start += batch_) {
      const std::size_t count = std::min(batch_, n - start);
      auto x = to_tensor(inputs.subspan(start * sample_size(), count * sample_size()), count);
      auto out = activations_of(x, layer).to(torch::kCPU).to(torch::kFloat32).reshape({static_cast<std::int64_t>(count), -1})
                     .contiguous();
      if (start == 0) {
        width = static_cast<std::size_t>(out.size(1));
        features.reserve(n * width);
      }
      features.insert(features.end(), out.data_ptr<float>(), out.data_ptr<float>() + count * width);
    }
    return width;
  }

  std::vector<float> parameter_vector() const override {
    std::vector<float> values;
    values.reserve(parameter_count());
    torch::NoGradGuard no_grad;
    for (const auto& parameter : module_.parameters()) {
      auto flat = parameter.detach().to(torch::kCPU).to(torch::kFloat32).contiguous().reshape({-1});
      values.insert(values.end(), flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
    }
    return values;
  }

  void set_parameter_vector(std::span<const float> values) override {
    const std::size_t expected = parameter_count();
    if (values.size() != expected)
      throw core::Error("a parameter vector of " + std::to_string(values.size()) + " values does not fit '" + info_.source +
                            "', which has " + std::to_string(expected) + " parameters",
                        "use the model file the vector was made from (the same architecture)");
    torch::NoGradGuard no_grad;
    std::size_t offset = 0;
    for (auto parameter : module_.parameters()) {
      const auto count = static_cast<std::size_t>(parameter.numel());
      auto source = torch::from_blob(const_cast<float*>(values.data() + offset), parameter.sizes(), torch::kFloat32);
      parameter.copy_(source.to(parameter.device()).to(parameter.dtype()));
      offset += count;
    }
  }

  void set_proximal_term(std::span<const float> anchor, double mu) override {
    proximal_anchor_.clear();
    proximal_mu_ = 0;
    if (mu <= 0) return;
    if (anchor.size() != parameter_count())
      throw core::Error("the FedProx anchor has " + std::to_string(anchor.size()) + " values, the model " +
                            std::to_string(parameter_count()),
                        "anchor local training to the global model's parameter_vector()");
    std::size_t offset = 0;
    for (const auto& parameter : module_.parameters()) {
      const auto count = static_cast<std::size_t>(parameter.numel());
      proximal_anchor_.push_back(torch::from_blob(const_cast<float*>(anchor.data() + offset), parameter.sizes(), torch::kFloat32)
                                     .clone()
                                     .to(parameter.device()));
      offset += count;
    }
    proximal_mu_ = mu;
  }

  void reset_optimizer() override { optimizer_.reset(); }

  void set_learning_rate(double learning_rate) override {
    training_.learning_rate = learning_rate;
    if (!optimizer_) return;
    for (auto& group : optimizer_->param_groups()) group.options().set_lr(learning_rate);
  }

  double time_forward_backward(std::span<const float> x, std::span<const int> labels, int steps) override {
    // The plain LibTorch loop an attacker would write: forward, cross-entropy, input gradient.
    const auto n = labels.size();
    const auto start = std::chrono::steady_clock::now();
    for (int step = 0; step < steps; ++step) {
      for (std::size_t begin = 0; begin < n; begin += batch_) {
        const std::size_t count = std::min(batch_, n - begin);
        auto input = to_tensor(x.subspan(begin * sample_size(), count * sample_size()), count).requires_grad_(true);
        auto target = torch::from_blob(const_cast<int*>(labels.data() + begin), {static_cast<std::int64_t>(count)},
                                       torch::kInt32).to(torch::kLong).to(device_);
        auto loss = torch::nn::functional::cross_entropy(logits_of(forward(input)), target);
        loss.backward();
        auto grad = input.grad().to(torch::kCPU);
        (void)grad;
      }
    }
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  void save(const std::string& path) override {
    try {
      module_.save(path);
    } catch (const c10::Error& error) {
      throw core::Error("could not write the model to '" + path + "': " + error.what_without_backtrace(),
                        "check that the folder exists and is writable");
    }
  }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
    torch::InferenceMode guard;
    for (std::size_t start = 0; start < n; start += batch_) {
      const std::size_t count = std::min(batch_, n - start);
      auto out = forward(to_tensor(inputs.subspan(start * sample_size(), count * sample_size()), count));
      copy_out(out, scores.subspan(start * classes(), count * classes()));
    }
  }

  void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn, std::span<float> grad_inputs,
                   std::span<float> scores) override {
    // fn is given all n rows at once (callers index their per-sample state by row): a call larger
    // than one batch is scored first, and back-propagated batch by batch after.
    const bool one_batch = n <= batch_;
    if (!one_batch) {
      do_predict(inputs, n, scores);
      grad_scores_.assign(n * classes(), 0.0f);
      fn(scores.first(n * classes()), grad_scores_);
    }
    for (std::size_t start = 0; start < n; start += batch_) {
      const std::size_t count = std::min(batch_, n - start);
      auto x = to_tensor(inputs.subspan(start * sample_size(), count * sample_size()), count).requires_grad_(true);
      auto out = forward(x);
      if (one_batch) {
        copy_out(out, scores.first(n * classes()));
        grad_scores_.assign(n * classes(), 0.0f);
        fn(scores.first(n * classes()), grad_scores_);
      }
      auto upstream = torch::from_blob(grad_scores_.data() + start * classes(),
                                       {static_cast<std::int64_t>(count), classes_i()}, torch::kFloat32)
                          .to(device_);
      out.backward(upstream);
      auto grad = x.grad().to(torch::kCPU).contiguous();
      std::memcpy(grad_inputs.data() + start * sample_size(), grad.data_ptr<float>(), count * sample_size() * sizeof(float));
    }
  }

 private:
  std::size_t classes() const { return static_cast<std::size_t>(info_.num_classes); }
  std::int64_t classes_i() const { return info_.num_classes; }

  torch::Tensor to_tensor(std::span<const float> values, std::size_t n) const {
    std::vector<std::int64_t> shape{static_cast<std::int64_t>(n)};
    shape.insert(shape.end(), info_.input_shape.begin(), info_.input_shape.end());
    auto cpu = torch::from_blob(const_cast<float*>(values.data()), shape, torch::kFloat32);
    return device_.is_cpu() ? cpu.clone() : cpu.to(device_);
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto result = module_.forward({x});
    if (result.isTuple()) result = result.toTuple()->elements().at(0);
    if (!result.isTensor())
      throw core::Error("the TorchScript model's forward() returned " + result.tagKind() + ", not a tensor of scores",
                        "wrap the model so that forward() returns a (batch, classes) tensor");
    auto out = result.toTensor();
    if (out.dim() != 2 || out.size(0) != x.size(0))
      throw core::Error("the TorchScript model returned a tensor of shape " + shape_text(out) +
                            " for a batch of " + std::to_string(x.size(0)),
                        "the model must return (batch, classes) scores; check --input-shape");
    return out.to(torch::kFloat32);
  }

  torch::Tensor logits_of(const torch::Tensor& out) const {
    return info_.scores == ScoreKind::Logits ? out : torch::log(out.clamp_min(1e-12));
  }

  static std::string shape_text(const torch::Tensor& t) {
    std::string text = "(";
    for (std::int64_t i = 0; i < t.dim(); ++i) text += (i ? ", " : "") + std::to_string(t.size(i));
    return text + ")";
  }

  void copy_out(const torch::Tensor& out, std::span<float> scores) const {
    auto cpu = out.detach().to(torch::kCPU).contiguous();
    std::memcpy(scores.data(), cpu.data_ptr<float>(), scores.size() * sizeof(float));
  }

  void probe(const TorchScriptOptions& options) {
    std::vector<float> zeros(info_.sample_size() * 2, 0.5f);
    torch::Tensor out;
    try {
      torch::InferenceMode guard;
      out = forward(to_tensor(zeros, 2));
    } catch (const core::Error&) {
      throw;
    } catch (const std::exception& error) {
      std::string what = error.what();
      if (auto* c10 = dynamic_cast<const c10::Error*>(&error)) what = c10->what_without_backtrace();
      if (what.size() > 400) what = what.substr(0, 400) + "…";
      throw core::Error("the model '" + info_.source + "' failed on an input of shape " + shape_text(to_tensor(zeros, 2)) +
                            ": " + what,
                        "check --input-shape (one sample, without the batch dimension)");
    }
    info_.num_classes = static_cast<int>(out.size(1));
    if (options.scores) {
      info_.scores = *options.scores;
    } else {
      // Rows that are non-negative and sum to one are probabilities; anything else is logits.
      auto cpu = out.to(torch::kCPU);
      const bool nonnegative = cpu.min().item<float>() >= 0.0f;
      const bool sums_to_one = (cpu.sum(1) - 1.0f).abs().max().item<float>() < 1e-4f;
      info_.scores = nonnegative && sums_to_one ? ScoreKind::Probabilities : ScoreKind::Logits;
    }
  }

  torch::Tensor activations_of(const torch::Tensor& x, const std::string& layer) {
    if (layer.empty() && module_.find_method("features")) {
      auto result = module_.run_method("features", x);
      if (!result.isTensor())
        throw core::Error("the model's features() returned " + result.tagKind() + ", not a tensor",
                          "make features(x) return the (batch, ...) activations");
      return result.toTensor();
    }
    std::vector<torch::jit::NameModule> children;
    for (const auto& child : module_.named_children()) children.push_back(child);
    if (children.size() < 2)
      throw core::Error("the model '" + info_.source + "' has " + std::to_string(children.size()) +
                            " top-level submodule(s): there is no inner layer to read activations from",
                        "export the model as an nn.Sequential, or add a @torch.jit.export def features(self, x) that "
                        "returns the penultimate activations");
    std::size_t stop = children.size() - 2;  // the input of the last submodule
    if (!layer.empty()) {
      auto found = std::find_if(children.begin(), children.end(), [&](const auto& c) { return c.name == layer; });
      if (found == children.end()) {
        std::string names;
        for (const auto& c : children) names += (names.empty() ? "" : ", ") + c.name;
        throw core::Error("the model has no top-level layer '" + layer + "'", "choose one of: " + names);
      }
      stop = static_cast<std::size_t>(found - children.begin());
    }
    torch::Tensor h = x;
    torch::Tensor at_layer;
    try {
      const std::size_t last = sequence_checked_ ? stop : children.size() - 1;
      for (std::size_t i = 0; i <= last; ++i) {
        h = children[i].value.forward({h}).toTensor();
        if (i == stop) at_layer = h;
      }
    } catch (const c10::Error& error) {
      throw not_a_sequence(std::string(": running its submodules in order failed: ") + error.what_without_backtrace());
    } catch (const core::Error&) {
      throw;
    } catch (const std::exception& error) {  // TorchScript's interpreter throws its own runtime errors
      throw not_a_sequence(std::string(": running its submodules in order failed: ") + error.what());
    }
    if (!sequence_checked_) {
      // Running the children in order is only the model when forward() is a plain chain.
      auto expected = forward(x);
      if (h.sizes() != expected.sizes() || !torch::allclose(h.to(torch::kFloat32), expected, 1e-4, 1e-4))
        throw not_a_sequence(": running its submodules in order does not give what forward() gives");
      sequence_checked_ = true;
    }
    return at_layer;
  }

  core::Error not_a_sequence(const std::string& why) const {
    std::string text = why.size() > 300 ? why.substr(0, 300) + "…" : why;
    return core::Error("cannot read the activations of '" + info_.source + "'" + text,
                       "export the model as an nn.Sequential, or add a @torch.jit.export def features(self, x) that "
                       "returns the penultimate activations");
  }

  std::size_t parameter_count() const {
    std::size_t count = 0;
    for (const auto& parameter : module_.parameters()) count += static_cast<std::size_t>(parameter.numel());
    return count;
  }

  torch::Tensor proximal_penalty() {
    torch::Tensor sum;
    std::size_t i = 0;
    for (const auto& parameter : module_.parameters()) {
      auto term = (parameter - proximal_anchor_.at(i++)).pow(2).sum();
      sum = sum.defined() ? sum + term : term;
    }
    return 0.5 * proximal_mu_ * sum;
  }

  void set_parameter_gradients(bool on) {
    for (auto parameter : module_.parameters()) parameter.set_requires_grad(on);
  }

  void make_optimizer() {
    std::vector<torch::Tensor> parameters;
    for (auto parameter : module_.parameters()) parameters.push_back(parameter);
    if (parameters.empty())
      throw core::Error("the TorchScript model '" + info_.source + "' has no parameters to train",
                        "export it with torch.jit.script(module) so that its parameters are kept");
    if (training_.optimizer == "sgd")
      optimizer_ = std::make_unique<torch::optim::SGD>(
          parameters, torch::optim::SGDOptions(training_.learning_rate).momentum(0.9).weight_decay(training_.weight_decay));
    else if (training_.optimizer == "adam")
      optimizer_ = std::make_unique<torch::optim::Adam>(
          parameters, torch::optim::AdamOptions(training_.learning_rate).weight_decay(training_.weight_decay));
    else
      throw core::Error("unknown optimizer '" + training_.optimizer + "'", "use adam or sgd");
  }

  torch::jit::Module module_;
  torch::Device device_{torch::kCPU};
  ClassifierInfo info_;
  TrainingOptions training_;
  std::size_t batch_;
  std::vector<float> grad_scores_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  bool sequence_checked_ = false;
  std::vector<torch::Tensor> proximal_anchor_;
  double proximal_mu_ = 0;
};

}  // namespace

std::unique_ptr<TrainableClassifier> load_torchscript(const std::string& path, const TorchScriptOptions& options,
                                                      const TrainingOptions& training) {
  return std::make_unique<TorchScriptClassifier>(path, options, training);
}

int cuda_device_count() { return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0; }

}  // namespace aegis::models
