// DP-SGD through LibTorch. The model is run as its chain of layers (nested nn.Sequential flattened),
// with the parameters not requiring gradients: the output z of every parameterised layer is kept
// (made an autograd leaf when nothing before it needs a gradient) together with its input a, and
// one backward pass of the summed per-sample losses gives dLoss_i/dz_i for every sample at once,
// since sample i's loss depends on sample i's activations only. Each layer's per-sample parameter
// gradient is then a small function of (a_i, g_i):
//   Linear     dW_i = sum_t g_it a_it^T, db_i = sum_t g_it          (t: any leading dimensions)
//   Conv2d     the same over the patches of a_i each output position saw (im2col), per group
//   LayerNorm  dgamma_i = sum_t g_it * xhat_it, dbeta_i = sum_t g_it (xhat recomputed from a_i)
//   Embedding  row v of dW_i = sum of g_it over the positions t where sample i has token v
// A DP step needs only each sample's gradient norm and the sum of the clipped gradients, so a
// Linear (or conv) layer never materialises per-sample weights when it can avoid it: with one
// position ||g a^T||^2 = ||g||^2 ||a||^2; with T positions ||G^T A||^2 = <A A^T, G G^T> when T^2 is
// the smaller cost (Goodfellow 2015; Li et al. 2022 "ghost clipping"); and sum_i c_i G_i^T A_i is
// one matrix product of the scaled output gradients with the inputs.
#include "aegis/models/dp_sgd.h"

#include <dlfcn.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <numbers>
#include <optional>
#include <random>
#include <thread>

#include <ATen/CPUGeneratorImpl.h>
#include <torch/script.h>
#include <torch/torch.h>

#include "aegis/core/error.h"

namespace aegis::models {
namespace {

void keep_openblas_single_threaded() {
  using SetThreads = void (*)(int);
  if (auto* set = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) set(1);
}

constexpr const char* kSupported = "Linear, Conv2d, LayerNorm and Embedding";
// Per-sample weight gradients are materialised at most this many floats at a time.
constexpr std::int64_t kChunkFloats = std::int64_t{1} << 24;

std::string qualified_name(const torch::jit::Module& m) {
  const auto& name = m.type()->name();
  return name ? name->qualifiedName() : std::string();
}

// "Conv2d" from "__torch__.torch.nn.modules.conv.___torch_mangle_3.Conv2d".
std::string short_name(const torch::jit::Module& m) {
  const auto& name = m.type()->name();
  return name ? name->name() : std::string("?");
}

bool is_torch_nn(const torch::jit::Module& m) { return qualified_name(m).rfind("__torch__.torch.nn.modules.", 0) == 0; }

std::optional<c10::IValue> constant(const torch::jit::Module& m, const std::string& name) {
  if (auto value = m.type()->findConstant(name)) return *value;
  if (m.hasattr(name)) return m.attr(name);
  return std::nullopt;
}

std::vector<std::int64_t> int_list(const c10::IValue& value, std::size_t dims) {
  if (value.isInt()) return std::vector<std::int64_t>(dims, value.toInt());
  if (value.isIntList()) return value.toIntVector();
  if (value.isTuple()) {
    std::vector<std::int64_t> out;
    for (const auto& e : value.toTupleRef().elements()) out.push_back(e.toInt());
    return out;
  }
  throw std::runtime_error("not a list of integers");
}

std::string what_of(const std::exception& error) {
  std::string what = error.what();
  if (auto* c10 = dynamic_cast<const c10::Error*>(&error)) what = c10->what_without_backtrace();
  if (what.size() > 400) what = what.substr(0, 400) + "…";
  return what;
}

std::string shape_text(const torch::Tensor& t) {
  std::string text = "(";
  for (std::int64_t i = 0; i < t.dim(); ++i) text += (i ? ", " : "") + std::to_string(t.size(i));
  return text + ")";
}

enum class Kind { PassThrough, Linear, Conv2d, LayerNorm, Embedding };

struct Layer {
  mutable torch::jit::Module module;  // forward() is not const
  std::string path;  // "3" or "3.1" inside a nested Sequential
  std::string type;  // "Conv2d"
  Kind kind = Kind::PassThrough;
  int weight = -1, bias = -1;  // indices into the parameter list
  // Conv2d
  std::vector<std::int64_t> kernel, stride, padding, dilation, explicit_pad;  // explicit_pad: F.pad order ('same')
  std::int64_t groups = 1;
  // LayerNorm
  std::vector<std::int64_t> normalized_shape;
  double eps = 1e-5;
  // Embedding
  std::int64_t vocabulary = 0;
  std::optional<std::int64_t> padding_idx;
};

struct Parameter {
  std::string name;
  torch::Tensor value;
  std::int64_t offset = 0;  // in the flattened vector
};

// What one parameterised layer's per-sample gradients are made of, computed once per batch from
// its input a and output gradient g:
//   Linear, Conv2d: first = A [B, groups, T, K] (inputs or patches), second = G [B, groups, T, O],
//                   so that sample i's weight gradient is G_i^T A_i (per group);
//   LayerNorm:      first = dgamma [B, D], second = dbeta [B, D] (per-sample, materialised);
//   Embedding:      first = token ids [B, T], second = output gradients [B, T, D] (padding zeroed).
struct Pieces {
  torch::Tensor first, second;
};

// Gaussian noise from OpenSSL's CSPRNG (RAND_bytes), by Box-Muller in double precision.
torch::Tensor secure_normal(at::IntArrayRef sizes) {
  auto out = torch::empty(sizes, torch::kFloat32);
  const auto n = out.numel();
  std::vector<std::uint64_t> bits(static_cast<std::size_t>(n + (n % 2)));
  if (!bits.empty() &&
      RAND_bytes(reinterpret_cast<unsigned char*>(bits.data()), static_cast<int>(bits.size() * sizeof(std::uint64_t))) != 1)
    throw core::Error("the system's random number generator (OpenSSL RAND_bytes) failed", "check /dev/urandom");
  float* data = out.data_ptr<float>();
  constexpr double scale = 1.0 / 9007199254740992.0;  // 2^-53
  for (std::int64_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(bits[static_cast<std::size_t>(i)] >> 11) + 1.0) * scale;  // (0, 1]
    const double u2 = static_cast<double>(bits[static_cast<std::size_t>(i) + 1] >> 11) * scale;     // [0, 1)
    const double r = std::sqrt(-2.0 * std::log(u1));
    data[i] = static_cast<float>(r * std::cos(2.0 * std::numbers::pi * u2));
    if (i + 1 < n) data[i + 1] = static_cast<float>(r * std::sin(2.0 * std::numbers::pi * u2));
  }
  return out;
}

}  // namespace

struct DpSgdTrainer::Impl {
  // The trainer's model as a Classifier: predictions in eval mode, input gradients by autograd.
  class View : public Classifier {
   public:
    explicit View(Impl& impl) : impl_(impl) {}
    const ClassifierInfo& info() const override { return impl_.info; }
    std::size_t preferred_batch() const override { return impl_.batch; }

   protected:
    void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
      impl_.predict(inputs, n, scores);
    }
    void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn, std::span<float> grad_inputs,
                     std::span<float> scores) override {
      if (!impl_.info.has_gradients) {
        Classifier::do_gradient(inputs, n, fn, grad_inputs, scores);
        return;
      }
      impl_.input_gradient(inputs, n, fn, grad_inputs, scores);
    }

   private:
    Impl& impl_;
  };

  // What one batched forward pass keeps: each parameterised layer's input and output, the
  // per-sample losses, and after backward() the output gradients.
  struct Trace {
    std::vector<torch::Tensor> inputs, outputs, grads;
    torch::Tensor losses;
  };

  std::string source;
  torch::jit::Module module;
  torch::Device device{torch::kCPU};
  DpSgdOptions options;
  ClassifierInfo info;
  std::size_t batch = 128;
  std::vector<Layer> layers;
  std::vector<Parameter> params;
  std::int64_t total = 0;
  bool embedding_input = false;
  bool clone_outputs = false;  // set when a layer modifies a kept output in place (ReLU(inplace=True))
  bool sequence_checked = false;
  at::Generator sampling_generator, noise_generator;
  std::unique_ptr<torch::optim::Optimizer> optimizer;
  std::unique_ptr<View> view;
  std::vector<float> grad_scores;

  Impl(const std::string& path, const TorchScriptOptions& model_options, DpSgdOptions dp)
      : source(path), options(std::move(dp)), batch(model_options.batch == 0 ? 128 : model_options.batch) {
    validate_options();
    keep_openblas_single_threaded();
    const int threads =
        model_options.threads > 0 ? model_options.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    if (torch::get_num_threads() != threads) torch::set_num_threads(threads);
    try {
      device = torch::Device(model_options.device);
    } catch (const std::exception&) {
      throw core::Error("unknown device '" + model_options.device + "'", "use cpu, cuda or cuda:N");
    }
    if (device.is_cuda() && !torch::cuda::is_available())
      throw core::Error("--device " + model_options.device + " was asked for, but this build's LibTorch sees no CUDA device",
                        "run with --device cpu, or build Aegis against a CUDA LibTorch on a machine with a GPU");
    try {
      module = torch::jit::load(path, device);
    } catch (const c10::Error& error) {
      std::string what = error.what_without_backtrace();
      if (what.size() > 300) what = what.substr(0, 300) + "…";
      throw core::Error("could not load '" + path + "' as TorchScript: " + what,
                        "export the model with torch.jit.script(model).save(path); a state_dict or a pickled nn.Module "
                        "is not TorchScript");
    }
    if (model_options.input_shape.empty())
      throw core::Error("TorchScript does not record its input shape",
                        "give it with --input-shape, e.g. --input-shape 1,28,28 (the data's sample shape is used when known)");
    info.input_shape = model_options.input_shape;
    info.backend = "torchscript";
    info.source = path;

    collect_parameters();
    if (module.named_parameters(/*recurse=*/false).size() != 0)
      throw core::Error("the model '" + path + "' has parameters of its own outside its layers",
                        "keep every parameter inside a layer (" + std::string(kSupported) + ") of an nn.Sequential");
    collect_layers(module, "");
    if (layers.empty())
      throw core::Error("the model '" + path + "' has no layers", "export an nn.Sequential of " + std::string(kSupported) + " layers");
    if (params.empty())
      throw core::Error("the TorchScript model '" + path + "' has no parameters to train",
                        "export it with torch.jit.script(module) so that its parameters are kept");
    for (std::size_t i = 0; i < layers.size(); ++i) {
      if (layers[i].kind != Kind::Embedding) continue;
      if (i != 0)
        throw core::Error("the Embedding layer '" + layers[i].path + "' of '" + path + "' is not the model's first layer",
                          "DP-SGD here takes token ids as the model input: put the Embedding first");
      embedding_input = true;
    }
    info.has_gradients = !embedding_input;
    for (auto& p : params) p.value.set_requires_grad(false);
    probe(model_options);

    const std::uint64_t noise_seed =
        options.secure_noise ? 0 : options.seed * 0x9E3779B97F4A7C15ull + 0xD1B54A32D192ED03ull;
    sampling_generator = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    noise_generator = at::make_generator<at::CPUGeneratorImpl>(noise_seed);
    torch::manual_seed(options.seed);  // dropout masks
    make_optimizer();
    view = std::make_unique<View>(*this);
  }

  void validate_options() const {
    auto bad = [](const std::string& what, const std::string& hint) { throw core::Error(what, hint); };
    if (!(options.noise_multiplier >= 0) || !std::isfinite(options.noise_multiplier))
      bad("the noise multiplier must be a finite number >= 0", "e.g. --noise-multiplier 1.0");
    if (!(options.max_grad_norm > 0) || !std::isfinite(options.max_grad_norm))
      bad("the clipping norm must be a finite number > 0", "e.g. --max-grad-norm 1.0");
    if (!(options.sample_rate > 0 && options.sample_rate <= 1))
      bad("the sample rate must be in (0, 1]", "e.g. --sample-rate 0.01 (expected batch = rate * records)");
    if (!(options.learning_rate > 0) || !std::isfinite(options.learning_rate))
      bad("the learning rate must be a finite number > 0", "e.g. --lr 0.1");
    if (!(options.momentum >= 0 && options.momentum < 1)) bad("the momentum must be in [0, 1)", "e.g. --momentum 0.9");
    if (options.optimizer != "sgd" && options.optimizer != "adam")
      bad("unknown optimizer '" + options.optimizer + "'", "use sgd or adam");
  }

  void collect_parameters() {
    for (const auto& p : module.named_parameters(/*recurse=*/true)) {
      params.push_back({p.name, p.value, total});
      total += p.value.numel();
    }
  }

  int parameter_index(const std::string& name) const {
    for (std::size_t i = 0; i < params.size(); ++i)
      if (params[i].name == name) return static_cast<int>(i);
    throw core::Error("DP-SGD cannot train '" + source + "': its parameter '" + name + "' is not one of the model's own",
                      "give each layer its own parameters (tied or shared weights are not supported)");
  }

  void collect_layers(const torch::jit::Module& parent, const std::string& prefix) {
    for (const auto& child : parent.named_children()) {
      const std::string path = prefix.empty() ? child.name : prefix + "." + child.name;
      if (is_torch_nn(child.value) && short_name(child.value) == "Sequential") {
        collect_layers(child.value, path);
        continue;
      }
      layers.push_back(classify(child.value, path));
    }
  }

  core::Error unsupported(const Layer& l, const std::string& why, const std::string& hint) const {
    return core::Error("DP-SGD cannot train '" + source + "': layer '" + l.path + "' (" + l.type + ") " + why, hint);
  }

  Layer classify(const torch::jit::Module& m, const std::string& path) {
    Layer l;
    l.module = m;
    l.path = path;
    l.type = short_name(m);
    const bool torch_nn = is_torch_nn(m);
    if (torch_nn && l.type.find("BatchNorm") != std::string::npos)
      throw unsupported(l, "normalises each sample with statistics of the whole batch, so a sample's gradient depends on "
                           "the others and DP-SGD's per-sample clipping bounds nothing",
                        "replace it with LayerNorm (supported) or GroupNorm(affine=False), or remove it, and retrain");
    for (const auto& b : m.named_buffers(/*recurse=*/true))
      if (b.name.find("running_mean") != std::string::npos || b.name.find("running_var") != std::string::npos)
        throw unsupported(l, "keeps running statistics of the training data, which would be released without noise",
                          "turn them off (track_running_stats=False) or use LayerNorm");
    std::vector<std::pair<std::string, torch::Tensor>> own;
    for (const auto& p : m.named_parameters(/*recurse=*/true)) own.emplace_back(p.name, p.value);
    if (own.empty()) return l;  // ReLU, Flatten, pooling, Dropout...: passes through

    const std::string hint = "use layers DP-SGD has per-sample gradients for (" + std::string(kSupported) +
                             ", and parameter-free layers), e.g. LayerNorm for normalisation; a recurrent layer can be "
                             "written with Linear layers";
    if (!torch_nn) throw unsupported(l, "is a custom parameterised module, which has no per-sample gradient rule", hint);
    if (l.type == "Linear") l.kind = Kind::Linear;
    else if (l.type == "Conv2d") l.kind = Kind::Conv2d;
    else if (l.type == "LayerNorm") l.kind = Kind::LayerNorm;
    else if (l.type == "Embedding") l.kind = Kind::Embedding;
    else throw unsupported(l, "has parameters but no per-sample gradient rule", hint);
    for (const auto& [name, value] : own) {
      if (name == "weight") l.weight = parameter_index(path + ".weight");
      else if (name == "bias") l.bias = parameter_index(path + ".bias");
      else throw unsupported(l, "has an unexpected parameter '" + name + "'", hint);
    }
    if (l.weight < 0) throw unsupported(l, "has a bias but no weight", hint);
    const auto& weight = params[static_cast<std::size_t>(l.weight)].value;
    const std::string script_hint = "export the model with torch.jit.script (a traced module does not keep its "
                                    "configuration), or with the layer's default settings";
    try {
      if (l.kind == Kind::Conv2d) {
        auto stride = constant(m, "stride"), padding = constant(m, "padding"), dilation = constant(m, "dilation"),
             groups = constant(m, "groups"), mode = constant(m, "padding_mode");
        if (!stride || !padding || !dilation || !groups) throw unsupported(l, "does not record its stride/padding", script_hint);
        if (weight.dim() != 4) throw unsupported(l, "has a weight of " + std::to_string(weight.dim()) + " dimensions", hint);
        if (mode && mode->isString() && mode->toStringRef() != "zeros")
          throw unsupported(l, "pads with mode '" + mode->toStringRef() + "'", "use padding_mode='zeros' (the default)");
        l.kernel = {weight.size(2), weight.size(3)};
        l.stride = int_list(*stride, 2);
        l.dilation = int_list(*dilation, 2);
        l.groups = groups->toInt();
        if (padding->isString()) {
          const auto& how = padding->toStringRef();
          l.padding = {0, 0};
          if (how == "same") {
            // As PyTorch pads 'same': dilation * (k - 1) in all, the smaller half first.
            std::vector<std::int64_t> pad;
            for (int d = 1; d >= 0; --d) {  // F.pad order: last dimension first
              const std::int64_t all = l.dilation[static_cast<std::size_t>(d)] * (l.kernel[static_cast<std::size_t>(d)] - 1);
              pad.push_back(all / 2);
              pad.push_back(all - all / 2);
            }
            l.explicit_pad = pad;
          } else if (how != "valid") {
            throw unsupported(l, "has padding '" + how + "'", "use integer padding, 'same' or 'valid'");
          }
        } else {
          l.padding = int_list(*padding, 2);
        }
        if (l.stride.size() != 2 || l.padding.size() != 2 || l.dilation.size() != 2 || l.groups < 1)
          throw unsupported(l, "has a configuration this build does not read", script_hint);
      } else if (l.kind == Kind::LayerNorm) {
        auto shape = constant(m, "normalized_shape"), eps = constant(m, "eps");
        if (!eps) throw unsupported(l, "does not record its eps", script_hint);
        l.eps = eps->toDouble();
        l.normalized_shape = shape ? int_list(*shape, 1) : weight.sizes().vec();
        if (l.bias >= 0 && params[static_cast<std::size_t>(l.bias)].value.sizes() != weight.sizes())
          throw unsupported(l, "has a bias unlike its weight", script_hint);
      } else if (l.kind == Kind::Embedding) {
        l.vocabulary = weight.size(0);
        if (auto pad = constant(m, "padding_idx"); pad && pad->isInt()) {
          l.padding_idx = pad->toInt();
          if (*l.padding_idx < 0) *l.padding_idx += l.vocabulary;
        }
        if (auto scale = constant(m, "scale_grad_by_freq"); scale && scale->isBool() && scale->toBool())
          throw unsupported(l, "scales gradients by token frequency in the batch, which mixes samples",
                            "use scale_grad_by_freq=False");
      } else if (l.kind == Kind::Linear && weight.dim() != 2) {
        throw unsupported(l, "has a weight of " + std::to_string(weight.dim()) + " dimensions", hint);
      }
    } catch (const core::Error&) {
      throw;
    } catch (const std::exception& error) {
      throw unsupported(l, std::string("has a configuration that could not be read: ") + what_of(error), script_hint);
    }
    return l;
  }

  // ----------------------------------------------------------------------------------------------
  // Inputs

  torch::Tensor inputs_of(std::span<const float> x, std::size_t n) const {
    if (x.size() != n * info.sample_size())
      throw core::Error("got " + std::to_string(x.size()) + " input values for " + std::to_string(n) +
                            " samples of " + std::to_string(info.sample_size()),
                        "check --input-shape against the data");
    std::vector<std::int64_t> shape{static_cast<std::int64_t>(n)};
    shape.insert(shape.end(), info.input_shape.begin(), info.input_shape.end());
    auto t = torch::from_blob(const_cast<float*>(x.data()), shape, torch::kFloat32).clone();
    return prepare(t);
  }

  // Embedding models take token ids: whole numbers within the vocabulary, as int64.
  torch::Tensor prepare(const torch::Tensor& t) const {
    if (!embedding_input) return t.to(device);
    const auto vocabulary = layers.front().vocabulary;
    if (t.numel() > 0) {
      const bool whole = torch::equal(t, t.round());
      const double lo = t.min().item<double>(), hi = t.max().item<double>();
      if (!whole || lo < 0 || hi >= static_cast<double>(vocabulary))
        throw core::Error("the model starts with an Embedding of " + std::to_string(vocabulary) +
                              " tokens, but the inputs are not token ids in 0.." + std::to_string(vocabulary - 1),
                          "give the token ids as the input values");
    }
    return t.to(torch::kLong).to(device);
  }

  torch::Tensor targets_of(std::span<const int> labels) const {
    for (int label : labels)
      if (label < 0 || label >= info.num_classes)
        throw core::Error("label " + std::to_string(label) + " is not a class of the model (0.." +
                              std::to_string(info.num_classes - 1) + ")",
                          "check the labels and the model's output size");
    return torch::from_blob(const_cast<int*>(labels.data()), {static_cast<std::int64_t>(labels.size())}, torch::kInt32)
        .to(torch::kLong)
        .to(device);
  }

  // ----------------------------------------------------------------------------------------------
  // Running the model

  torch::Tensor run(const Layer& l, const torch::Tensor& h) const {
    auto out = l.module.forward({h});
    if (!out.isTensor())
      throw core::Error("layer '" + l.path + "' (" + l.type + ") of '" + source + "' returned " + out.tagKind() + ", not a tensor",
                        "export a model whose layers each take and return one tensor");
    return out.toTensor();
  }

  torch::Tensor forward(const torch::Tensor& x) {
    auto result = module.forward({x});
    if (result.isTuple()) result = result.toTuple()->elements().at(0);
    if (!result.isTensor())
      throw core::Error("the TorchScript model's forward() returned " + result.tagKind() + ", not a tensor of scores",
                        "wrap the model so that forward() returns a (batch, classes) tensor");
    return result.toTensor();
  }

  torch::Tensor scores_of(const torch::Tensor& out, std::int64_t n) const {
    if (out.dim() != 2 || out.size(0) != n)
      throw core::Error("the model returned a tensor of shape " + shape_text(out) + " for a batch of " + std::to_string(n),
                        "the model must return (batch, classes) scores; check --input-shape");
    return out.to(torch::kFloat32);
  }

  // Cross-entropy of each sample (the scores taken as logits, or as probabilities).
  torch::Tensor losses_of(const torch::Tensor& scores, const torch::Tensor& target) const {
    auto log_p = info.scores == ScoreKind::Logits ? torch::log_softmax(scores, 1) : torch::log(scores.clamp_min(1e-12));
    return -log_p.gather(1, target.unsqueeze(1)).squeeze(1);
  }

  torch::Tensor chain(const torch::Tensor& x) const {
    torch::Tensor h = x;
    for (const auto& l : layers) h = run(l, h);
    return h;
  }

  core::Error not_a_sequence(const std::string& why) const {
    return core::Error("DP-SGD cannot train '" + source + "': " + why,
                       "export the model as an nn.Sequential (or a module whose forward() runs its submodules in order "
                       "and does nothing else), e.g. nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), ...)");
  }

  // Running the layers in order must be the model: compared with forward() in eval mode.
  void check_sequence(const torch::Tensor& x) {
    torch::NoGradGuard no_grad;
    module.eval();
    torch::Tensor h, expected;
    try {
      h = chain(x);
    } catch (const core::Error&) {
      throw;
    } catch (const std::exception& error) {
      throw not_a_sequence("running its submodules in order failed: " + what_of(error));
    }
    expected = forward(x);
    if (!h.defined() || h.sizes() != expected.sizes() ||
        !torch::allclose(h.to(torch::kFloat32), expected.to(torch::kFloat32), 1e-4, 1e-5))
      throw not_a_sequence("running its submodules in order does not give what its forward() gives");
    sequence_checked = true;
  }

  void probe(const TorchScriptOptions& model_options) {
    const std::size_t n = 3, size = info.sample_size();
    std::vector<float> values(n * size);
    for (std::size_t i = 0; i < values.size(); ++i)
      values[i] = embedding_input ? static_cast<float>((i * 7 + 1) % static_cast<std::size_t>(layers.front().vocabulary))
                                  : static_cast<float>((i * 2654435761u) % 1000u) / 1000.0f;
    torch::Tensor x, out;
    try {
      x = inputs_of(values, n);
      torch::NoGradGuard no_grad;
      module.eval();
      out = forward(x);
    } catch (const core::Error&) {
      throw;
    } catch (const std::exception& error) {
      throw core::Error("the model '" + source + "' failed on an input of shape " + shape_text(x) + ": " + what_of(error),
                        "check --input-shape (one sample, without the batch dimension)");
    }
    scores_of(out, static_cast<std::int64_t>(n));
    info.num_classes = static_cast<int>(out.size(1));
    if (model_options.scores) {
      info.scores = *model_options.scores;
    } else {
      auto cpu = out.to(torch::kCPU).to(torch::kFloat32);
      const bool nonnegative = cpu.min().item<float>() >= 0.0f;
      const bool sums_to_one = (cpu.sum(1) - 1.0f).abs().max().item<float>() < 1e-4f;
      info.scores = nonnegative && sums_to_one ? ScoreKind::Probabilities : ScoreKind::Logits;
    }
    check_sequence(x);
    sequence_checked = false;  // checked again on the first real batch
  }

  // One batched forward pass in train mode keeping each parameterised layer's input and output,
  // then one backward pass of the summed losses for the output gradients.
  Trace trace(const torch::Tensor& x, const torch::Tensor& target) {
    if (!sequence_checked) check_sequence(x);
    module.train();
    for (int attempt = 0;; ++attempt) {
      try {
        if (auto t = trace_once(x, target)) return std::move(*t);
      } catch (const core::Error&) {
        throw;
      } catch (const std::exception& error) {
        if (clone_outputs)
          throw core::Error("the model '" + source + "' failed in training: " + what_of(error),
                            "check --input-shape and that the model runs in train mode");
      }
      if (clone_outputs) throw core::Error("internal: a layer output changed in place even when copied");
      clone_outputs = true;  // an in-place layer (ReLU(inplace=True)) changed a kept output: copy them
    }
  }

  std::optional<Trace> trace_once(const torch::Tensor& x, const torch::Tensor& target) {
    Trace t;
    std::vector<std::int64_t> versions;
    torch::Tensor h = x;
    for (const auto& l : layers) {
      if (l.kind == Kind::PassThrough) {
        h = run(l, h);
        continue;
      }
      t.inputs.push_back(h);
      auto z = run(l, h);
      if (!z.requires_grad()) z.requires_grad_(true);  // the first parameterised layer: a leaf
      versions.push_back(z._version());
      t.outputs.push_back(z);
      h = clone_outputs ? z.clone() : z;
    }
    t.losses = losses_of(scores_of(h, x.size(0)), target);
    for (std::size_t k = 0; k < t.outputs.size(); ++k)
      if (t.outputs[k]._version() != versions[k]) return std::nullopt;
    auto grads = torch::autograd::grad({t.losses.sum()}, t.outputs, {}, /*retain_graph=*/false, /*create_graph=*/false,
                                       /*allow_unused=*/true);
    for (std::size_t k = 0; k < grads.size(); ++k)
      t.grads.push_back(grads[k].defined() ? grads[k].detach() : torch::zeros_like(t.outputs[k]));
    for (auto& a : t.inputs) a = a.detach();
    for (auto& z : t.outputs) z = z.detach();
    t.losses = t.losses.detach();
    return t;
  }

  // ----------------------------------------------------------------------------------------------
  // Per-layer per-sample gradients

  Pieces blocks(const Layer& l, const torch::Tensor& a, const torch::Tensor& g) const {
    const auto B = a.size(0);
    if (l.kind == Kind::Linear) return {a.reshape({B, 1, -1, a.size(-1)}), g.reshape({B, 1, -1, g.size(-1)})};
    // Conv2d: the patches each output position saw, as rows of (channel, kernel row, kernel column)
    // as the weight is laid out. Built from strided views (Tensor::unfold), which LibTorch 1.13
    // copies much faster than its im2col on small channel counts.
    const auto [kh, kw] = std::pair(l.kernel[0], l.kernel[1]);
    const auto [dh, dw] = std::pair(l.dilation[0], l.dilation[1]);
    torch::Tensor input = a;
    if (!l.explicit_pad.empty()) input = torch::constant_pad_nd(a, l.explicit_pad, 0);
    else if (l.padding[0] != 0 || l.padding[1] != 0)
      input = torch::constant_pad_nd(a, {l.padding[1], l.padding[1], l.padding[0], l.padding[0]}, 0);
    auto windows = input.unfold(2, dh * (kh - 1) + 1, l.stride[0]).unfold(3, dw * (kw - 1) + 1, l.stride[1]);
    if (dh > 1 || dw > 1) windows = windows.slice(4, 0, c10::nullopt, dh).slice(5, 0, c10::nullopt, dw);
    // windows: [B, C, Ho, Wo, kh, kw] -> [B, L, C * kh * kw] -> [B, groups, L, K]
    const auto L = windows.size(2) * windows.size(3);
    if (g.numel() != B * g.size(1) * L)
      throw core::Error("internal: conv layer '" + l.path + "' output " + shape_text(g) + " does not match its " +
                        std::to_string(L) + " patches");
    auto A = windows.permute({0, 2, 3, 1, 4, 5}).reshape({B, L, l.groups, -1}).transpose(1, 2);
    return {A, g.reshape({B, l.groups, -1, L}).transpose(2, 3)};
  }

  // Per-sample weight gradients G_i^T A_i of a Linear or Conv2d layer: [b, groups, O, K].
  static torch::Tensor outer(const torch::Tensor& A, const torch::Tensor& G) {
    if (A.size(2) == 1) return G.transpose(2, 3) * A;  // one position: an outer product
    return torch::matmul(G.transpose(2, 3), A);
  }

  Pieces pieces(const Layer& l, const torch::Tensor& a, const torch::Tensor& g) const {
    switch (l.kind) {
      case Kind::Linear:
      case Kind::Conv2d:
        return blocks(l, a, g);
      case Kind::LayerNorm:
        return layer_norm_grads(l, a, g);
      case Kind::Embedding:
        return embedding_rows(l, a, g);
      case Kind::PassThrough:
        break;
    }
    return {};
  }

  // Every per-sample gradient of layer l, as [B, numel] rows, into rows[param].
  void materialise(const Layer& l, const Pieces& p, std::vector<torch::Tensor>& rows) const {
    const auto B = p.first.size(0);
    auto w = static_cast<std::size_t>(l.weight);
    switch (l.kind) {
      case Kind::Linear:
      case Kind::Conv2d: {
        const auto& [A, G] = p;
        rows[w] = outer(A, G).reshape({B, -1});
        if (l.bias >= 0) rows[static_cast<std::size_t>(l.bias)] = G.sum(2).reshape({B, -1});
        break;
      }
      case Kind::LayerNorm: {
        const auto& [dgamma, dbeta] = p;
        rows[w] = dgamma;
        if (l.bias >= 0) rows[static_cast<std::size_t>(l.bias)] = dbeta;
        break;
      }
      case Kind::Embedding: {
        const auto& [ids, G] = p;
        const auto D = G.size(2);
        auto offsets = torch::arange(B, ids.options()).unsqueeze(1) * l.vocabulary;
        rows[w] = torch::zeros({B * l.vocabulary, D}, G.options())
                      .index_add_(0, (ids + offsets).reshape(-1), G.reshape({-1, D}))
                      .reshape({B, -1});
        break;
      }
      case Kind::PassThrough:
        break;
    }
  }

  Pieces layer_norm_grads(const Layer& l, const torch::Tensor& a, const torch::Tensor& g) const {
    const auto B = a.size(0);
    auto xhat = torch::layer_norm(a, l.normalized_shape, {}, {}, l.eps);
    std::int64_t d = 1;
    for (auto s : l.normalized_shape) d *= s;
    return {(g * xhat).reshape({B, -1, d}).sum(1), g.reshape({B, -1, d}).sum(1)};
  }

  // Token ids [B, T] and output gradients [B, T, D], with the padding positions' gradients zeroed
  // (the padding row gets no gradient, as in PyTorch).
  Pieces embedding_rows(const Layer& l, const torch::Tensor& a, const torch::Tensor& g) const {
    const auto B = a.size(0);
    auto ids = a.reshape({B, -1});
    auto G = g.reshape({B, ids.size(1), -1});
    if (l.padding_idx) G = G * (ids != *l.padding_idx).unsqueeze(2).to(G.dtype());
    return {ids, G};
  }

  // fn(start, end) over slices of the batch small enough that per_sample floats each stay within
  // kChunkFloats, concatenated.
  static torch::Tensor by_chunks(std::int64_t B, std::int64_t per_sample,
                                 const std::function<torch::Tensor(std::int64_t, std::int64_t)>& fn) {
    const auto chunk = std::max<std::int64_t>(1, kChunkFloats / std::max<std::int64_t>(1, per_sample));
    if (chunk >= B) return fn(0, B);
    std::vector<torch::Tensor> parts;
    for (std::int64_t s = 0; s < B; s += chunk) parts.push_back(fn(s, std::min(B, s + chunk)));
    return torch::cat(parts);
  }

  // Squared norm of each sample's gradient over layer l's parameters: [B].
  torch::Tensor squared_norms(const Layer& l, const Pieces& p) const {
    const auto B = p.first.size(0);
    switch (l.kind) {
      case Kind::Linear:
      case Kind::Conv2d: {
        const auto& [A, G] = p;
        const auto T = A.size(2), K = A.size(3), O = G.size(3);
        const auto groups = A.size(1);
        torch::Tensor norms;
        if (T == 1) {
          norms = (A.square().sum(at::IntArrayRef{2, 3}) * G.square().sum(at::IntArrayRef{2, 3})).sum(1);
        } else if (T * (K + O) < K * O) {
          // <A A^T, G G^T>: T x T Gram matrices instead of O x K gradients.
          norms = by_chunks(B, groups * T * T, [&](std::int64_t s, std::int64_t e) {
            auto a_ = A.slice(0, s, e), g_ = G.slice(0, s, e);
            return (torch::matmul(a_, a_.transpose(2, 3)) * torch::matmul(g_, g_.transpose(2, 3))).sum(at::IntArrayRef{1, 2, 3});
          });
        } else {
          norms = by_chunks(B, groups * O * K, [&](std::int64_t s, std::int64_t e) {
            return outer(A.slice(0, s, e), G.slice(0, s, e)).square().sum(at::IntArrayRef{1, 2, 3});
          });
        }
        if (l.bias >= 0) norms = norms + G.sum(2).square().sum(at::IntArrayRef{1, 2});
        return norms;
      }
      case Kind::LayerNorm: {
        const auto& [dgamma, dbeta] = p;
        auto norms = dgamma.square().sum(1);
        if (l.bias >= 0) norms = norms + dbeta.square().sum(1);
        return norms;
      }
      case Kind::Embedding: {
        // Positions holding the same token add up before the norm: sum over t, t' with equal ids of g_t . g_t'.
        const auto& [ids, G] = p;
        const auto T = ids.size(1);
        return by_chunks(B, T * T, [&](std::int64_t s, std::int64_t e) {
          auto i_ = ids.slice(0, s, e), g_ = G.slice(0, s, e);
          auto same = (i_.unsqueeze(2) == i_.unsqueeze(1)).to(g_.dtype());
          return (same * torch::bmm(g_, g_.transpose(1, 2))).sum(at::IntArrayRef{1, 2});
        });
      }
      case Kind::PassThrough:
        break;
    }
    return torch::zeros({B}, p.first.options().dtype(torch::kFloat32));
  }

  // sum_i c_i * (sample i's gradient) for layer l's parameters, added into sums.
  void add_clipped_sum(const Layer& l, const Pieces& p, const torch::Tensor& c, std::vector<torch::Tensor>& sums) const {
    const auto B = p.first.size(0);
    auto& weight_sum = sums[static_cast<std::size_t>(l.weight)];
    switch (l.kind) {
      case Kind::Linear:
      case Kind::Conv2d: {
        const auto& [A, G] = p;
        const auto groups = A.size(1), T = A.size(2), K = A.size(3), O = G.size(3);
        auto scaled = G * c.view({B, 1, 1, 1});
        auto lhs = scaled.permute({1, 3, 0, 2}).reshape({groups, O, B * T});
        auto rhs = A.permute({1, 0, 2, 3}).reshape({groups, B * T, K});
        weight_sum += torch::bmm(lhs, rhs).reshape(weight_sum.sizes());
        if (l.bias >= 0) {
          auto& bias_sum = sums[static_cast<std::size_t>(l.bias)];
          bias_sum += scaled.sum(at::IntArrayRef{0, 2}).reshape(bias_sum.sizes());
        }
        break;
      }
      case Kind::LayerNorm: {
        const auto& [dgamma, dbeta] = p;
        weight_sum += (dgamma * c.unsqueeze(1)).sum(0).reshape(weight_sum.sizes());
        if (l.bias >= 0) {
          auto& bias_sum = sums[static_cast<std::size_t>(l.bias)];
          bias_sum += (dbeta * c.unsqueeze(1)).sum(0).reshape(bias_sum.sizes());
        }
        break;
      }
      case Kind::Embedding: {
        const auto& [ids, G] = p;
        const auto D = G.size(2);
        weight_sum.index_add_(0, ids.reshape(-1), (G * c.view({B, 1, 1})).reshape({-1, D}));
        break;
      }
      case Kind::PassThrough:
        break;
    }
  }

  // ----------------------------------------------------------------------------------------------
  // DP-SGD

  void make_optimizer() {
    std::vector<torch::Tensor> values;
    for (const auto& p : params) values.push_back(p.value);
    if (options.optimizer == "sgd")
      optimizer = std::make_unique<torch::optim::SGD>(values, torch::optim::SGDOptions(options.learning_rate).momentum(options.momentum));
    else
      optimizer = std::make_unique<torch::optim::Adam>(values, torch::optim::AdamOptions(options.learning_rate));
  }

  torch::Tensor noise(at::IntArrayRef sizes) {
    if (options.secure_noise) return secure_normal(sizes);
    return torch::randn(sizes, noise_generator, torch::TensorOptions().dtype(torch::kFloat32));
  }

  DpStepStats step(std::span<const float> x, std::span<const int> labels) {
    const std::size_t n = labels.size();
    if (n == 0) throw core::Error("DP-SGD needs training records; none were given", "give a non-empty data set");
    if (x.size() != n * info.sample_size())
      throw core::Error("got " + std::to_string(x.size()) + " input values for " + std::to_string(n) + " labels of samples of " +
                            std::to_string(info.sample_size()),
                        "check --input-shape against the data");
    DpStepStats stats;
    // Poisson sampling: each record joins independently with probability q.
    auto chosen = (torch::rand({static_cast<std::int64_t>(n)}, sampling_generator, torch::TensorOptions().dtype(torch::kFloat64)) <
                   options.sample_rate)
                      .nonzero()
                      .reshape(-1);
    const auto B = chosen.numel();
    stats.batch_size = static_cast<std::size_t>(B);

    std::vector<torch::Tensor> sums;
    for (const auto& p : params) sums.push_back(torch::zeros_like(p.value));
    if (B > 0) {
      std::vector<std::int64_t> shape{static_cast<std::int64_t>(n)};
      shape.insert(shape.end(), info.input_shape.begin(), info.input_shape.end());
      auto all_x = torch::from_blob(const_cast<float*>(x.data()), shape, torch::kFloat32);
      const auto rows = chosen.to(torch::kCPU);
      const auto* idx = rows.data_ptr<std::int64_t>();
      double loss_sum = 0, norm_sum = 0, clipped = 0;
      // The sampled batch in physical batches of at most `batch` records: norms and clipped sums
      // are per sample, so this is the same step with bounded memory.
      const auto physical = static_cast<std::int64_t>(batch);
      for (std::int64_t begin = 0; begin < B; begin += physical) {
        const auto end = std::min(B, begin + physical);
        std::vector<int> batch_labels;
        for (std::int64_t i = begin; i < end; ++i) batch_labels.push_back(labels[static_cast<std::size_t>(idx[i])]);
        auto xb = prepare(all_x.index_select(0, rows.slice(0, begin, end)));
        auto yb = targets_of(batch_labels);
        auto t = trace(xb, yb);
        torch::NoGradGuard no_grad;
        auto squared = torch::zeros({end - begin}, t.losses.options());
        std::vector<Pieces> parts;
        std::size_t k = 0;
        for (const auto& l : layers)
          if (l.kind != Kind::PassThrough) {
            parts.push_back(pieces(l, t.inputs[k], t.grads[k]));
            squared += squared_norms(l, parts.back());
            ++k;
          }
        loss_sum += t.losses.sum().item<double>();
        t = Trace();  // the activations are no longer needed
        auto norms = squared.clamp_min(0).sqrt();
        auto clip = (options.max_grad_norm / (norms + 1e-6)).clamp_max(1.0);
        norm_sum += norms.sum().item<double>();
        clipped += (norms > options.max_grad_norm).sum().item<double>();
        k = 0;
        for (const auto& l : layers)
          if (l.kind != Kind::PassThrough) {
            add_clipped_sum(l, parts[k], clip, sums);
            ++k;
          }
      }
      stats.mean_loss = loss_sum / static_cast<double>(B);
      stats.mean_grad_norm = norm_sum / static_cast<double>(B);
      stats.clipped_fraction = clipped / static_cast<double>(B);
    }
    torch::NoGradGuard no_grad;
    const double std_dev = options.noise_multiplier * options.max_grad_norm;
    const double expected_batch = options.sample_rate * static_cast<double>(n);
    for (std::size_t i = 0; i < params.size(); ++i) {
      auto grad = sums[i];
      if (std_dev > 0) grad = grad + noise(grad.sizes()).to(grad.device()) * std_dev;
      params[i].value.mutable_grad() = grad / expected_batch;
    }
    optimizer->step();
    for (auto& p : params) p.value.mutable_grad() = torch::Tensor();
    return stats;
  }

  std::vector<float> per_sample_gradients(std::span<const float> x, std::span<const int> labels, bool slow) {
    const std::size_t n = labels.size();
    auto all = inputs_of(x, n);
    auto targets = targets_of(labels);
    std::vector<float> out(n * static_cast<std::size_t>(total), 0.0f);
    if (n == 0) return out;
    if (slow) {
      if (!sequence_checked) check_sequence(all);
      module.train();
      std::vector<torch::Tensor> values;
      for (auto& p : params) values.push_back(p.value.set_requires_grad(true));
      try {
        for (std::size_t i = 0; i < n; ++i) {
          const auto s = static_cast<std::int64_t>(i);
          auto loss = losses_of(scores_of(forward(all.slice(0, s, s + 1)), 1), targets.slice(0, s, s + 1)).sum();
          auto grads = torch::autograd::grad({loss}, values, {}, false, false, /*allow_unused=*/true);
          for (std::size_t j = 0; j < params.size(); ++j) {
            if (!grads[j].defined()) continue;
            auto cpu = grads[j].to(torch::kCPU).to(torch::kFloat32).contiguous();
            std::memcpy(out.data() + i * static_cast<std::size_t>(total) + static_cast<std::size_t>(params[j].offset),
                        cpu.data_ptr<float>(), static_cast<std::size_t>(cpu.numel()) * sizeof(float));
          }
        }
      } catch (...) {
        for (auto& p : params) p.value.set_requires_grad(false);
        throw;
      }
      for (auto& p : params) p.value.set_requires_grad(false);
      return out;
    }
    for (std::size_t start = 0; start < n; start += batch) {
      const auto count = std::min(batch, n - start);
      const auto s = static_cast<std::int64_t>(start), e = static_cast<std::int64_t>(start + count);
      auto t = trace(all.slice(0, s, e), targets.slice(0, s, e));
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> rows(params.size());
      std::size_t k = 0;
      for (const auto& l : layers)
        if (l.kind != Kind::PassThrough) {
          materialise(l, pieces(l, t.inputs[k], t.grads[k]), rows);
          ++k;
        }
      auto flat = torch::from_blob(out.data() + start * static_cast<std::size_t>(total),
                                   {static_cast<std::int64_t>(count), total}, torch::kFloat32);
      for (std::size_t j = 0; j < params.size(); ++j)
        if (rows[j].defined()) flat.narrow(1, params[j].offset, params[j].value.numel()).copy_(rows[j]);
    }
    return out;
  }

  std::vector<float> parameters() const {
    std::vector<float> out(static_cast<std::size_t>(total));
    for (const auto& p : params) {
      auto cpu = p.value.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
      std::memcpy(out.data() + p.offset, cpu.data_ptr<float>(), static_cast<std::size_t>(cpu.numel()) * sizeof(float));
    }
    return out;
  }

  // ----------------------------------------------------------------------------------------------
  // The Classifier view

  void copy_out(const torch::Tensor& out, std::span<float> scores) const {
    auto cpu = out.detach().to(torch::kCPU).to(torch::kFloat32).contiguous();
    std::memcpy(scores.data(), cpu.data_ptr<float>(), scores.size() * sizeof(float));
  }

  void predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) {
    torch::NoGradGuard no_grad;
    module.eval();
    const std::size_t size = info.sample_size(), classes = static_cast<std::size_t>(info.num_classes);
    for (std::size_t start = 0; start < n; start += batch) {
      const std::size_t count = std::min(batch, n - start);
      auto out = scores_of(forward(inputs_of(inputs.subspan(start * size, count * size), count)), static_cast<std::int64_t>(count));
      copy_out(out, scores.subspan(start * classes, count * classes));
    }
  }

  void input_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn, std::span<float> grad_inputs,
                      std::span<float> scores) {
    const std::size_t size = info.sample_size(), classes = static_cast<std::size_t>(info.num_classes);
    predict(inputs, n, scores);
    grad_scores.assign(n * classes, 0.0f);
    fn(scores.first(n * classes), grad_scores);
    module.eval();
    for (std::size_t start = 0; start < n; start += batch) {
      const std::size_t count = std::min(batch, n - start);
      auto x = inputs_of(inputs.subspan(start * size, count * size), count).requires_grad_(true);
      auto out = scores_of(forward(x), static_cast<std::int64_t>(count));
      auto upstream = torch::from_blob(grad_scores.data() + start * classes,
                                       {static_cast<std::int64_t>(count), static_cast<std::int64_t>(classes)}, torch::kFloat32)
                          .to(device);
      out.backward(upstream);
      auto grad = x.grad().to(torch::kCPU).contiguous();
      std::memcpy(grad_inputs.data() + start * size, grad.data_ptr<float>(), count * size * sizeof(float));
    }
  }
};

DpSgdTrainer::DpSgdTrainer(const std::string& torchscript_path, const TorchScriptOptions& model_options, DpSgdOptions options)
    : impl_(std::make_unique<Impl>(torchscript_path, model_options, std::move(options))) {}

DpSgdTrainer::~DpSgdTrainer() = default;

DpStepStats DpSgdTrainer::step(std::span<const float> x, std::span<const int> labels) { return impl_->step(x, labels); }

void DpSgdTrainer::train(std::span<const float> x, std::span<const int> labels, std::uint64_t steps, const DpProgress& progress) {
  for (std::uint64_t s = 0; s < steps; ++s) {
    const auto stats = impl_->step(x, labels);
    if (progress) progress(s + 1, steps, stats);
  }
}

std::vector<float> DpSgdTrainer::per_sample_gradients(std::span<const float> x, std::span<const int> labels, bool slow) {
  return impl_->per_sample_gradients(x, labels, slow);
}

std::size_t DpSgdTrainer::parameter_count() const { return static_cast<std::size_t>(impl_->total); }

std::vector<float> DpSgdTrainer::parameters() const { return impl_->parameters(); }

Classifier& DpSgdTrainer::classifier() { return *impl_->view; }

void DpSgdTrainer::save(const std::string& path) {
  impl_->module.eval();
  try {
    impl_->module.save(path);
  } catch (const c10::Error& error) {
    throw core::Error("could not write the model to '" + path + "': " + error.what_without_backtrace(),
                      "check that the folder exists and is writable");
  }
}

}  // namespace aegis::models
