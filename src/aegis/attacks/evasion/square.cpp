// Square Attack (Andriushchenko, Croce, Flammarion, Hein, ECCV 2020): a score-based black-box
// attack by random search. Each step changes one square window of the current perturbation and
// keeps the change when it lowers the margin loss; windows shrink on a fixed schedule.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

// How a sample's features lie on channels x rows x columns, so that windows are squares in the
// image plane. Inputs of rank 1 are one row; rank 2 is one channel; rank 3 and up is taken as
// channels-first (PyTorch, ONNX) unless it plainly ends in a colour axis ({32, 32, 3} from Keras).
struct Geometry {
  std::size_t channels = 1;
  std::size_t rows = 1;
  std::size_t cols = 1;
  bool channels_last = false;

  std::size_t at(std::size_t c, std::size_t r, std::size_t col) const {
    return channels_last ? (r * cols + col) * channels + c : (c * rows + r) * cols + col;
  }
};

Geometry geometry_of(const std::vector<std::int64_t>& shape, std::size_t size) {
  Geometry flat;
  flat.cols = size;
  const bool all_positive = std::all_of(shape.begin(), shape.end(), [](std::int64_t d) { return d > 0; });
  if (!all_positive || shape.size() < 2) return flat;
  auto dim = [&](std::size_t from_end) { return static_cast<std::size_t>(shape[shape.size() - from_end]); };
  auto is_colour = [](std::size_t d) { return d == 1 || d == 3 || d == 4; };
  Geometry g;
  if (shape.size() == 2) {
    g.rows = dim(2);
    g.cols = dim(1);
  } else if (is_colour(dim(1)) && !is_colour(dim(3))) {
    g.rows = dim(3);
    g.cols = dim(2);
    g.channels = dim(1);
    g.channels_last = true;
  } else {
    g.rows = dim(2);
    g.cols = dim(1);
    g.channels = size / (g.rows * g.cols);
  }
  // A layout we cannot read as an image (leading batch-like axes in a channels-last shape) is
  // searched as one flat row: still correct, only less image-shaped.
  if (g.channels * g.rows * g.cols != size) return flat;
  return g;
}

// The paper's piecewise-constant schedule for 10,000 iterations (p halves after iterations 10, 50,
// 200, 500, 1000, 2000, 4000, 6000 and 8000), stretched over the iterations this budget allows.
double fraction_at(double p_init, int iteration, int iterations) {
  static constexpr int kEdges[] = {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000};
  const auto scaled = static_cast<long long>(static_cast<double>(iteration) / iterations * 10000.0);
  int halvings = 0;
  for (int edge : kEdges)
    if (scaled > edge) ++halvings;
  return p_init / static_cast<double>(1 << halvings);
}

struct Window {
  std::size_t rows = 1, cols = 1;  // size
  std::size_t row = 0, col = 0;    // top-left corner
};

// A window covering about a fraction p of the image plane: a square of side sqrt(p * rows * cols)
// on images, a segment of p * cols features on flat inputs. `min_side` and `odd` serve the L2
// update, whose centred pattern needs a middle cell.
Window window_size(const Geometry& g, double p, std::size_t min_side, bool odd) {
  Window w;
  auto fit = [&](double want, std::size_t limit) {
    auto side = static_cast<std::size_t>(std::max(std::lround(want), 1L));
    side = std::max(side, min_side);
    if (odd && side % 2 == 0) ++side;
    return std::min(side, limit);
  };
  if (g.rows >= 2 && g.cols >= 2) {
    const std::size_t side = fit(std::sqrt(p * static_cast<double>(g.rows * g.cols)), std::min(g.rows, g.cols));
    w.rows = w.cols = side;
  } else if (g.rows == 1) {
    w.cols = fit(p * static_cast<double>(g.cols), g.cols);
  } else {
    w.rows = fit(p * static_cast<double>(g.rows), g.rows);
  }
  return w;
}

Window place(Window w, const Geometry& g, std::mt19937_64& rng) {
  w.row = std::uniform_int_distribution<std::size_t>(0, g.rows - w.rows)(rng);
  w.col = std::uniform_int_distribution<std::size_t>(0, g.cols - w.cols)(rng);
  return w;
}

// Concentric centred rectangles with weights 1/(k+1)^2, summed (the paper's pseudo-Gaussian
// block): a cell at Chebyshev distance m from the centre gets sum_{k=m}^{K-1} 1/(k+1)^2. Unit norm.
std::vector<double> centred_block(std::size_t rows, std::size_t cols) {
  std::vector<double> block(rows * cols, 0.0);
  if (block.empty()) return block;
  const std::size_t centre_r = rows / 2, centre_c = cols / 2;
  const std::size_t squares = std::max(centre_r, centre_c) + 1;
  std::vector<double> tail(squares + 1, 0.0);  // tail[m] = sum_{k>=m} 1/(k+1)^2
  for (std::size_t k = squares; k-- > 0;) tail[k] = tail[k + 1] + 1.0 / static_cast<double>((k + 1) * (k + 1));
  for (std::size_t r = 0; r < rows; ++r)
    for (std::size_t c = 0; c < cols; ++c) {
      const std::size_t dr = r > centre_r ? r - centre_r : centre_r - r;
      const std::size_t dc = c > centre_c ? c - centre_c : centre_c - c;
      block[r * cols + c] = tail[std::min(std::max(dr, dc), squares)];
    }
  detail::normalise(block);
  return block;
}

// The L2 attack's window pattern: two centred blocks of opposite sign side by side, split along
// the longer axis (a random one for squares, as the paper's random transpose). Unit norm.
std::vector<double> split_pattern(std::size_t rows, std::size_t cols, std::mt19937_64& rng) {
  bool split_rows = rows > cols || (rows == cols && std::bernoulli_distribution(0.5)(rng));
  if ((split_rows ? rows : cols) < 2) split_rows = !split_rows;
  const std::size_t length = split_rows ? rows : cols;
  if (length < 2) return centred_block(rows, cols);
  const std::size_t first = length / 2;
  std::vector<double> pattern(rows * cols, 0.0);
  for (int half = 0; half < 2; ++half) {
    const std::size_t extent = half == 0 ? first : length - first;
    const std::size_t br = split_rows ? extent : rows, bc = split_rows ? cols : extent;
    const std::vector<double> block = centred_block(br, bc);
    const double sign = half == 0 ? 1.0 : -1.0;
    for (std::size_t r = 0; r < br; ++r)
      for (std::size_t c = 0; c < bc; ++c) {
        const std::size_t pr = split_rows && half == 1 ? r + first : r;
        const std::size_t pc = !split_rows && half == 1 ? c + first : c;
        pattern[pr * cols + pc] = sign * block[r * bc + c];
      }
  }
  detail::normalise(pattern);
  return pattern;
}

double random_sign(std::mt19937_64& rng) { return std::bernoulli_distribution(0.5)(rng) ? 1.0 : -1.0; }

// The margin the attack drives below zero: score of the true class minus the best other one
// (untargeted), or best other minus the target (targeted). Probabilities are compared as
// log-probabilities, which differ from the logits by one constant per row.
class MarginLoss {
 public:
  explicit MarginLoss(const models::ClassifierInfo& info)
      : kind_(info.scores), classes_(static_cast<std::size_t>(info.num_classes)), row_(classes_) {}

  double operator()(std::span<const float> scores, int label, int target) {
    std::span<const float> values = scores;
    if (kind_ == models::ScoreKind::Probabilities) {
      models::to_probabilities(kind_, scores, row_);
      for (float& v : row_) v = static_cast<float>(std::log(std::max(static_cast<double>(v), 1e-30)));
      values = row_;
    }
    const int own = target >= 0 ? target : label;
    double other = -std::numeric_limits<double>::infinity();
    for (std::size_t c = 0; c < classes_; ++c)
      if (static_cast<int>(c) != own) other = std::max(other, static_cast<double>(values[c]));
    const double mine = values[static_cast<std::size_t>(own)];
    return target >= 0 ? other - mine : mine - other;
  }

 private:
  models::ScoreKind kind_;
  std::size_t classes_;
  std::vector<float> row_;
};

class SquareAttack final : public EvasionAttack {
 public:
  explicit SquareAttack(const SquareOptions& options) : options_(options) {}

  std::string name() const override { return "square"; }
  AttackKind kind() const override { return AttackKind::Budgeted; }
  Norm norm() const override { return options_.norm; }
  bool needs_gradients() const override { return false; }
  bool supports_targeted() const override { return true; }

  void validate(const models::ClassifierInfo& model, const Bounds& bounds) const override {
    EvasionAttack::validate(model, bounds);
    if (options_.max_queries < 1)
      throw core::Error("square: max_queries is " + std::to_string(options_.max_queries) + "; it needs at least 1",
                        "give a query budget per sample, for example 5000");
    if (!(options_.p_init > 0.0f && options_.p_init <= 1.0f))
      throw core::Error("square: p_init is " + std::to_string(options_.p_init) +
                            "; it is the fraction of features changed at first and must lie in (0, 1]",
                        "use the paper's 0.8 (Linf) or 0.1 (L2)");
  }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float eps, const Bounds& bounds) override {
    validate(model.info(), bounds);
    detail::check_positive_budget(name(), eps);
    const std::size_t n = detail::check_attack_input(model, input, bounds, name());
    const std::size_t d = model.sample_size();
    const std::size_t k = static_cast<std::size_t>(model.num_classes());
    const Geometry geometry = geometry_of(model.info().input_shape, d);
    const bool targeted = !input.targets.empty();
    auto target_of = [&](std::size_t i) { return targeted ? input.targets[i] : -1; };

    std::mt19937_64 rng(options_.seed);
    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 0);
    if (n == 0) return outcome;

    for (std::size_t i = 0; i < n; ++i) {
      auto xi = input.x.subspan(i * d, d);
      auto best = std::span<float>(outcome.x_adv).subspan(i * d, d);
      if (options_.norm == Norm::Linf)
        init_stripes(geometry, xi, best, eps, bounds, rng);
      else
        init_tiles(geometry, xi, best, eps, bounds, rng);
    }

    MarginLoss loss(model.info());
    std::vector<float> scores(n * k);
    detail::predict_in_batches(model, outcome.x_adv, scores);
    std::vector<double> best_loss(n);
    std::vector<char> done(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      outcome.queries[i] = 1;
      const auto row = std::span<const float>(scores).subspan(i * k, k);
      best_loss[i] = loss(row, input.labels[i], target_of(i));
      done[i] = detail::is_adversarial(row, input.labels[i], target_of(i));
    }

    const int iterations = options_.max_queries - 1;
    std::vector<std::size_t> active;
    std::vector<float> candidates;
    for (int it = 0; it < iterations; ++it) {
      active.clear();
      for (std::size_t i = 0; i < n; ++i)
        if (!done[i]) active.push_back(i);
      if (active.empty()) break;
      const double p = fraction_at(options_.p_init, it, iterations);
      candidates.resize(active.size() * d);
      for (std::size_t a = 0; a < active.size(); ++a) {
        const std::size_t i = active[a];
        auto xi = input.x.subspan(i * d, d);
        auto best = std::span<const float>(outcome.x_adv).subspan(i * d, d);
        auto cand = std::span<float>(candidates).subspan(a * d, d);
        if (options_.norm == Norm::Linf)
          step_linf(geometry, xi, best, cand, p, eps, bounds, rng);
        else
          step_l2(geometry, xi, best, cand, p, eps, bounds, rng);
      }
      scores.resize(active.size() * k);
      detail::predict_in_batches(model, candidates, scores);
      for (std::size_t a = 0; a < active.size(); ++a) {
        const std::size_t i = active[a];
        ++outcome.queries[i];
        const auto row = std::span<const float>(scores).subspan(a * k, k);
        const bool success = detail::is_adversarial(row, input.labels[i], target_of(i));
        const double value = loss(row, input.labels[i], target_of(i));
        if (success || value < best_loss[i]) {
          best_loss[i] = value;
          std::copy_n(candidates.begin() + static_cast<std::ptrdiff_t>(a * d), d,
                      outcome.x_adv.begin() + static_cast<std::ptrdiff_t>(i * d));
          done[i] = success;
        }
      }
    }
    return outcome;
  }

 private:
  // Vertical stripes: every column of every channel moved by +eps or -eps, the start the paper
  // found best for Linf (models are sensitive to high-frequency stripes).
  static void init_stripes(const Geometry& g, std::span<const float> x, std::span<float> out, float eps,
                           const Bounds& bounds, std::mt19937_64& rng) {
    for (std::size_t c = 0; c < g.channels; ++c)
      for (std::size_t col = 0; col < g.cols; ++col) {
        const float shift = static_cast<float>(random_sign(rng)) * eps;
        for (std::size_t r = 0; r < g.rows; ++r) {
          const std::size_t j = g.at(c, r, col);
          out[j] = x[j] + shift;
        }
      }
    detail::project(Norm::Linf, eps, bounds, x, out);
  }

  // L2 start: a 5 x 5 grid of tiles, each holding the split pattern with a random sign per
  // channel, scaled as a whole onto the eps sphere.
  static void init_tiles(const Geometry& g, std::span<const float> x, std::span<float> out, float eps,
                         const Bounds& bounds, std::mt19937_64& rng) {
    std::vector<double> delta(x.size(), 0.0);
    auto grid = [](std::size_t extent, std::size_t& tile, std::size_t& count, std::size_t& offset) {
      tile = std::max<std::size_t>(extent / 5, 1);
      count = std::min<std::size_t>(5, extent / tile);
      offset = (extent - count * tile) / 2;
    };
    std::size_t tile_r = 1, count_r = 1, offset_r = 0, tile_c = 1, count_c = 1, offset_c = 0;
    grid(g.rows, tile_r, count_r, offset_r);
    grid(g.cols, tile_c, count_c, offset_c);
    for (std::size_t tr = 0; tr < count_r; ++tr)
      for (std::size_t tc = 0; tc < count_c; ++tc) {
        const std::vector<double> pattern = split_pattern(tile_r, tile_c, rng);
        for (std::size_t c = 0; c < g.channels; ++c) {
          const double sign = random_sign(rng);
          for (std::size_t r = 0; r < tile_r; ++r)
            for (std::size_t col = 0; col < tile_c; ++col)
              delta[g.at(c, offset_r + tr * tile_r + r, offset_c + tc * tile_c + col)] +=
                  sign * pattern[r * tile_c + col];
        }
      }
    onto_sphere(x, delta, out, eps, bounds);
  }

  // out = clip(x + eps * delta / |delta|): the perturbation on the sphere, then in the range
  // (clipping only moves coordinates back toward x, so the ball still holds).
  static void onto_sphere(std::span<const float> x, std::span<const double> delta, std::span<float> out, float eps,
                          const Bounds& bounds) {
    double sum = 0;
    for (double v : delta) sum += v * v;
    const double scale = sum > 0 ? eps / std::sqrt(sum) : 0.0;
    for (std::size_t j = 0; j < x.size(); ++j) out[j] = static_cast<float>(x[j] + delta[j] * scale);
    detail::project(Norm::L2, eps, bounds, x, out);
  }

  // Linf step: one window set to +eps or -eps per channel; redrawn while it would change nothing.
  static void step_linf(const Geometry& g, std::span<const float> x, std::span<const float> best,
                        std::span<float> cand, double p, float eps, const Bounds& bounds, std::mt19937_64& rng) {
    std::copy(best.begin(), best.end(), cand.begin());
    const Window size = window_size(g, p, 1, false);
    std::vector<float> shift(g.channels);
    for (int attempt = 0; attempt < 16; ++attempt) {
      const Window w = place(size, g, rng);
      for (float& s : shift) s = static_cast<float>(random_sign(rng)) * eps;
      bool changes = false;
      for (std::size_t c = 0; c < g.channels && !changes; ++c)
        for (std::size_t r = 0; r < w.rows && !changes; ++r)
          for (std::size_t col = 0; col < w.cols && !changes; ++col) {
            const std::size_t j = g.at(c, w.row + r, w.col + col);
            const float v = std::clamp(x[j] + shift[c], bounds.lo, bounds.hi);
            changes = std::fabs(v - best[j]) >= 1e-7f;
          }
      if (!changes && attempt + 1 < 16) continue;
      for (std::size_t c = 0; c < g.channels; ++c)
        for (std::size_t r = 0; r < w.rows; ++r)
          for (std::size_t col = 0; col < w.cols; ++col) {
            const std::size_t j = g.at(c, w.row + r, w.col + col);
            cand[j] = x[j] + shift[c];
          }
      break;
    }
    detail::project(Norm::Linf, eps, bounds, x, cand);
  }

  // L2 step (the paper's Algorithm 3): a new pattern goes into window 1, window 2 is emptied, and
  // each channel's window gets the mass of both windows plus its share of the unused budget, so the
  // perturbation stays on the eps sphere while mass moves between places.
  static void step_l2(const Geometry& g, std::span<const float> x, std::span<const float> best,
                      std::span<float> cand, double p, float eps, const Bounds& bounds, std::mt19937_64& rng) {
    const std::size_t d = x.size();
    std::vector<double> delta(d);
    double total = 0;
    for (std::size_t j = 0; j < d; ++j) {
      delta[j] = static_cast<double>(best[j]) - x[j];
      total += delta[j] * delta[j];
    }
    const Window size = window_size(g, p, 3, true);
    const Window w1 = place(size, g, rng);
    const Window w2 = place(size, g, rng);
    const std::vector<double> pattern = split_pattern(size.rows, size.cols, rng);
    const double unused = std::max(static_cast<double>(eps) * eps - total, 0.0) / static_cast<double>(g.channels);
    auto inside = [](const Window& w, std::size_t r, std::size_t c) {
      return r >= w.row && r < w.row + w.rows && c >= w.col && c < w.col + w.cols;
    };
    std::vector<double> fresh(size.rows * size.cols);
    for (std::size_t c = 0; c < g.channels; ++c) {
      double in_w1 = 0, in_union = 0;
      for (std::size_t r = 0; r < size.rows; ++r)
        for (std::size_t col = 0; col < size.cols; ++col) {
          const double v1 = delta[g.at(c, w1.row + r, w1.col + col)];
          in_w1 += v1 * v1;
          const std::size_t r2 = w2.row + r, c2 = w2.col + col;
          if (!inside(w1, r2, c2)) {
            const double v2 = delta[g.at(c, r2, c2)];
            in_union += v2 * v2;
          }
        }
      in_union += in_w1;
      const double sign = random_sign(rng);
      const double old_norm = std::sqrt(in_w1) + 1e-10;
      double fresh_sum = 0;
      for (std::size_t r = 0; r < size.rows; ++r)
        for (std::size_t col = 0; col < size.cols; ++col) {
          const std::size_t q = r * size.cols + col;
          fresh[q] = sign * pattern[q] + delta[g.at(c, w1.row + r, w1.col + col)] / old_norm;
          fresh_sum += fresh[q] * fresh[q];
        }
      if (fresh_sum <= 0) {  // the old window was exactly the opposite pattern
        for (std::size_t q = 0; q < fresh.size(); ++q) fresh[q] = sign * pattern[q];
        fresh_sum = 1;
      }
      const double scale = std::sqrt(unused + in_union) / std::sqrt(fresh_sum);
      for (std::size_t r = 0; r < size.rows; ++r)
        for (std::size_t col = 0; col < size.cols; ++col) delta[g.at(c, w2.row + r, w2.col + col)] = 0.0;
      for (std::size_t r = 0; r < size.rows; ++r)
        for (std::size_t col = 0; col < size.cols; ++col)
          delta[g.at(c, w1.row + r, w1.col + col)] = fresh[r * size.cols + col] * scale;
    }
    onto_sphere(x, delta, cand, eps, bounds);
  }

  SquareOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_square(const SquareOptions& options) {
  return std::make_unique<SquareAttack>(options);
}

}  // namespace aegis::attacks
