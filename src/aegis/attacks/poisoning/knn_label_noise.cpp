// Label noise from the k nearest neighbours in feature space: exact brute force with blocked
// matrix products on a thread pool. See poison_detection.h.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <thread>
#include <utility>

#include <Eigen/Core>

#include "aegis/attacks/poisoning/class_records.h"
#include "aegis/attacks/poisoning/poison_detection.h"
#include "aegis/core/error.h"
#include "aegis/core/thread_pool.h"

namespace aegis::attacks {
namespace {

using FloatRows = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Distances are computed a square tile of kBlock x kBlock records at a time (1 MiB of floats):
// large enough for Eigen's matrix product to run near peak, and memory that does not grow with n.
constexpr Eigen::Index kBlock = 512;

void check(const KnnLabelNoiseOptions& o) {
  const std::string what = "kNN label noise: ";
  if (o.k < 1)
    throw core::Error(what + "k is " + std::to_string(o.k) + "; at least 1 neighbour is needed", "use 10");
  if (!(o.min_disagreement >= 0.0 && o.min_disagreement <= 1.0))
    throw core::Error(what + "min_disagreement is " + std::to_string(o.min_disagreement) + "; it is a share in [0, 1]",
                      "use 0.5: most neighbours carry another label");
  if (o.threads < 0) throw core::Error(what + "threads is " + std::to_string(o.threads) + "; use 0 for one per core");
}

// Each column to mean 0 and standard deviation 1; constant columns become 0 and drop out.
FloatRows standardised(std::span<const float> features, std::size_t d) {
  const auto n = static_cast<Eigen::Index>(features.size() / d);
  const auto dims = static_cast<Eigen::Index>(d);
  const Eigen::Map<const FloatRows> x(features.data(), n, dims);
  FloatRows z(n, dims);
  for (Eigen::Index j = 0; j < dims; ++j) {
    double sum = 0, squares = 0;
    for (Eigen::Index i = 0; i < n; ++i) sum += x(i, j);
    const double mean = sum / static_cast<double>(n);
    for (Eigen::Index i = 0; i < n; ++i) squares += (x(i, j) - mean) * (x(i, j) - mean);
    const double sd = std::sqrt(squares / static_cast<double>(n));
    // Relative to the column's magnitude, a spread at float rounding level is no spread at all.
    const bool constant = !(sd > 1e-6 * std::max(1.0, std::abs(mean)));
    for (Eigen::Index i = 0; i < n; ++i)
      z(i, j) = constant ? 0.0f : static_cast<float>((x(i, j) - mean) / sd);
  }
  return z;
}

using Neighbour = std::pair<float, std::uint32_t>;  // (ranking distance, record); ordered by both, so ties go to the lower index

// Every record's k nearest neighbours so far, each a max-heap of at most k in one flat array. A
// record's heap ends up holding the k smallest (distance, index) pairs it was offered, whatever the
// order of the offers, so the result does not depend on threads or scheduling.
class NeighbourHeaps {
 public:
  NeighbourHeaps(std::size_t n, std::size_t k) : k_(k), entries_(n * k), size_(n, 0) {}

  void offer(std::size_t record, Neighbour candidate) {
    Neighbour* heap = entries_.data() + record * k_;
    std::size_t& size = size_[record];
    if (size < k_) {
      heap[size++] = candidate;
      std::push_heap(heap, heap + size);
    } else if (candidate < heap[0]) {
      std::pop_heap(heap, heap + k_);
      heap[k_ - 1] = candidate;
      std::push_heap(heap, heap + k_);
    }
  }

  std::span<const Neighbour> of(std::size_t record) const {
    return {entries_.data() + record * k_, size_[record]};
  }

 private:
  std::size_t k_;
  std::vector<Neighbour> entries_;
  std::vector<std::size_t> size_;
};

// The upper triangle of the tile grid, (I, J) with I <= J, ordered by diagonal: tiles next to each
// other in the order share no block (beyond the first diagonal), so two threads rarely wait for
// the same block's lock.
std::vector<std::pair<Eigen::Index, Eigen::Index>> tile_order(Eigen::Index blocks) {
  std::vector<std::pair<Eigen::Index, Eigen::Index>> order;
  order.reserve(static_cast<std::size_t>(blocks * (blocks + 1) / 2));
  for (Eigen::Index offset = 0; offset < blocks; ++offset)
    for (Eigen::Index i = 0; i + offset < blocks; ++i) order.emplace_back(i, i + offset);
  return order;
}

// Offers each record of the block starting at `rows` the candidates of the block starting at
// `candidates`. Column r of `dots` holds row r's dot products with the candidates; the ranking
// distance |c|^2 - 2 r.c is the squared distance less |r|^2, which is the same for all of r's
// candidates and cannot change their order.
void offer_block(const Eigen::MatrixXf& dots, Eigen::Index rows, Eigen::Index candidates, const Eigen::VectorXf& norms,
                 NeighbourHeaps& heaps) {
  for (Eigen::Index r = 0; r < dots.cols(); ++r) {
    const auto record = static_cast<std::size_t>(rows + r);
    const float* column = dots.data() + r * dots.rows();
    for (Eigen::Index c = 0; c < dots.rows(); ++c) {
      const auto candidate = static_cast<std::size_t>(candidates + c);
      if (candidate == record) continue;
      heaps.offer(record, {norms[candidates + c] - 2.0f * column[c], static_cast<std::uint32_t>(candidate)});
    }
  }
}

}  // namespace

PoisonScores knn_label_noise(std::span<const float> features, std::size_t d, std::span<const int> labels, int classes,
                             const KnnLabelNoiseOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  check(options);
  const auto by_class = poisoning::records_by_class("kNN label noise", features, d, labels, classes);
  const std::size_t n = labels.size();
  if (n < 2)
    throw core::Error("kNN label noise: " + std::to_string(n) + " records; neighbours need at least 2",
                      "pass the whole training set");
  if (n > std::numeric_limits<std::uint32_t>::max())
    throw core::Error("kNN label noise: " + std::to_string(n) + " records; brute-force neighbours stop at 2^32",
                      "sample the training set");
  const std::size_t k = std::min<std::size_t>(static_cast<std::size_t>(options.k), n - 1);

  const FloatRows z = standardised(features, d);
  const Eigen::VectorXf norms = z.rowwise().squaredNorm();
  auto out = poisoning::no_suspects("knn-label-noise", n);

  // Distances are symmetric: each tile above the diagonal serves both its blocks, halving the
  // matrix products. The products run unlocked; offering the results to a block's heaps takes
  // that block's lock.
  const Eigen::Index blocks = (static_cast<Eigen::Index>(n) + kBlock - 1) / kBlock;
  const auto tiles = tile_order(blocks);
  NeighbourHeaps heaps(n, k);
  std::vector<std::mutex> block_locks(static_cast<std::size_t>(blocks));
  std::atomic<std::size_t> next{0};
  std::mutex failure_mutex;
  std::exception_ptr failure;
  {
    const std::size_t threads = options.threads > 0 ? static_cast<std::size_t>(options.threads)
                                                    : std::max(1u, std::thread::hardware_concurrency());
    core::ThreadPool pool(std::min(threads, tiles.size()));
    const std::size_t workers = pool.size();
    for (std::size_t w = 0; w < workers; ++w) {
      pool.submit([&] {
        try {
          Eigen::MatrixXf dots, transposed;
          for (std::size_t t = next++; t < tiles.size(); t = next++) {
            const auto [bi, bj] = tiles[t];
            const Eigen::Index first_i = bi * kBlock, first_j = bj * kBlock;
            const Eigen::Index size_i = std::min(kBlock, static_cast<Eigen::Index>(n) - first_i);
            const Eigen::Index size_j = std::min(kBlock, static_cast<Eigen::Index>(n) - first_j);
            dots.resize(size_j, size_i);
            dots.noalias() = z.middleRows(first_j, size_j) * z.middleRows(first_i, size_i).transpose();
            {
              std::lock_guard lock(block_locks[static_cast<std::size_t>(bi)]);
              offer_block(dots, first_i, first_j, norms, heaps);
            }
            if (bi == bj) continue;
            transposed = dots.transpose();
            std::lock_guard lock(block_locks[static_cast<std::size_t>(bj)]);
            offer_block(transposed, first_j, first_i, norms, heaps);
          }
        } catch (...) {
          // Stop the other workers early and hand the first failure to the caller.
          next = tiles.size();
          std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
        }
      });
    }
    pool.wait();
  }
  if (failure) std::rethrow_exception(failure);
  for (std::size_t record = 0; record < n; ++record) {
    std::size_t differ = 0;
    for (const Neighbour& neighbour : heaps.of(record)) differ += labels[neighbour.second] != labels[record] ? 1 : 0;
    out.score[record] = static_cast<double>(differ) / static_cast<double>(k);
    out.flagged[record] = out.score[record] >= options.min_disagreement ? 1 : 0;
  }

  for (int cls = 0; cls < classes; ++cls) {
    const auto& rows = by_class[static_cast<std::size_t>(cls)];
    if (rows.empty()) continue;
    std::size_t flagged = 0;
    double disagreement = 0;
    for (std::size_t r : rows) {
      flagged += out.flagged[r];
      disagreement += out.score[r];
    }
    out.notes.push_back("class " + std::to_string(cls) + ": " + std::to_string(flagged) + " of " +
                        std::to_string(rows.size()) + " flagged (" +
                        poisoning::fixed(100.0 * static_cast<double>(flagged) / static_cast<double>(rows.size()), 1) +
                        "%); mean neighbour disagreement " +
                        poisoning::fixed(disagreement / static_cast<double>(rows.size()), 2));
  }
  if (k < static_cast<std::size_t>(options.k))
    out.notes.push_back("k lowered from " + std::to_string(options.k) + " to " + std::to_string(k) +
                        ": there are only " + std::to_string(n) + " records");
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace aegis::attacks
