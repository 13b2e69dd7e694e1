#include "aegis/attacks/poisoning/principal_components.h"

#include <algorithm>
#include <cmath>

#include <Eigen/Eigenvalues>

namespace aegis::attacks::poisoning {
namespace {

// Rows are copied into double blocks of this many for the covariance and the projections: large
// enough for Eigen's matrix products to run at speed, small enough not to copy the class.
constexpr std::size_t kBlockRows = 512;

// Fills `block` with rows [first, first + block.rows()) of the class, centred.
void centred_block(std::span<const float> features, std::size_t d, std::span<const std::size_t> rows,
                   std::size_t first, const Eigen::VectorXd& mean, RowMatrix& block) {
  for (Eigen::Index r = 0; r < block.rows(); ++r) {
    const float* x = features.data() + rows[first + static_cast<std::size_t>(r)] * d;
    for (std::size_t j = 0; j < d; ++j) block(r, static_cast<Eigen::Index>(j)) = double{x[j]} - mean[static_cast<Eigen::Index>(j)];
  }
}

// How many of the eigenvalues (ascending, as Eigen returns them) to keep from the top: at most k,
// and only those clearly above rounding noise, since a direction of zero variance has no meaning.
Eigen::Index kept(const Eigen::VectorXd& ascending, int k) {
  const Eigen::Index m = ascending.size();
  const double largest = m > 0 ? std::max(ascending[m - 1], 0.0) : 0.0;
  Eigen::Index count = 0;
  while (count < std::min<Eigen::Index>(k, m) && ascending[m - 1 - count] > largest * 1e-12 && largest > 0) ++count;
  return count;
}

}  // namespace

PrincipalComponents principal_components(std::span<const float> features, std::size_t d,
                                         std::span<const std::size_t> rows, int k) {
  const auto n = static_cast<Eigen::Index>(rows.size());
  const auto dims = static_cast<Eigen::Index>(d);
  PrincipalComponents result;
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(dims);
  for (std::size_t r : rows)
    for (std::size_t j = 0; j < d; ++j) mean[static_cast<Eigen::Index>(j)] += features[r * d + j];
  if (n > 0) mean /= static_cast<double>(n);

  RowMatrix block;
  if (n >= dims) {
    // Covariance route: X^T X accumulated a block at a time, then its top eigenvectors.
    Eigen::MatrixXd scatter = Eigen::MatrixXd::Zero(dims, dims);
    for (std::size_t first = 0; first < rows.size(); first += kBlockRows) {
      block.resize(static_cast<Eigen::Index>(std::min(kBlockRows, rows.size() - first)), dims);
      centred_block(features, d, rows, first, mean, block);
      scatter.selfadjointView<Eigen::Lower>().rankUpdate(block.transpose());
    }
    // The solver reads only the lower triangle, which is all rankUpdate wrote.
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(scatter);
    const Eigen::VectorXd& values = solver.eigenvalues();
    const Eigen::Index m = kept(values, k);
    Eigen::MatrixXd directions(dims, m);
    result.variance.resize(m);
    for (Eigen::Index c = 0; c < m; ++c) {
      directions.col(c) = solver.eigenvectors().col(dims - 1 - c);
      result.variance[c] = values[dims - 1 - c] / static_cast<double>(n);
    }
    result.total_variance = scatter.diagonal().sum() / static_cast<double>(n);
    result.projections.resize(n, m);
    for (std::size_t first = 0; first < rows.size(); first += kBlockRows) {
      const auto count = static_cast<Eigen::Index>(std::min(kBlockRows, rows.size() - first));
      block.resize(count, dims);
      centred_block(features, d, rows, first, mean, block);
      result.projections.middleRows(static_cast<Eigen::Index>(first), count).noalias() = block * directions;
    }
  } else {
    // Gram route, fewer rows than dimensions: with X = U S V^T, X X^T = U S^2 U^T and the
    // projections X V are U S, so the n x n eigenproblem gives them without a d x d matrix.
    block.resize(n, dims);
    centred_block(features, d, rows, 0, mean, block);
    Eigen::MatrixXd gram = Eigen::MatrixXd::Zero(n, n);
    gram.selfadjointView<Eigen::Lower>().rankUpdate(block);
    Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(gram);
    const Eigen::VectorXd& values = solver.eigenvalues();
    const Eigen::Index m = kept(values, k);
    result.variance.resize(m);
    result.projections.resize(n, m);
    for (Eigen::Index c = 0; c < m; ++c) {
      const double value = values[n - 1 - c];
      result.variance[c] = value / static_cast<double>(n);
      result.projections.col(c) = solver.eigenvectors().col(n - 1 - c) * std::sqrt(value);
    }
    result.total_variance = gram.diagonal().sum() / static_cast<double>(n);
  }
  return result;
}

}  // namespace aegis::attacks::poisoning
