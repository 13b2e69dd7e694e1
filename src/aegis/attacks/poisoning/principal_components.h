// Principal-component projections of one class's feature rows, shared by activation clustering
// and spectral signatures. Internal to src/aegis/attacks/poisoning.
#pragma once

#include <cstddef>
#include <span>

#include <Eigen/Core>

namespace aegis::attacks::poisoning {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

struct PrincipalComponents {
  RowMatrix projections;     // rows.size() x k: each row's centred features on the top k directions
  Eigen::VectorXd variance;  // k: the variance along each direction, largest first
  double total_variance = 0; // summed over all d dimensions
};

// The records `rows` of the n x d row-major `features`, centred on their mean and projected onto
// their top min(k, d, rows.size()) principal directions. Works on the d x d covariance when there
// are at least d rows and on the rows x rows Gram matrix otherwise, so memory stays
// O(rows * k + min(rows, d)^2) besides a block of rows; directions of zero variance are dropped.
PrincipalComponents principal_components(std::span<const float> features, std::size_t d,
                                         std::span<const std::size_t> rows, int k);

}  // namespace aegis::attacks::poisoning
