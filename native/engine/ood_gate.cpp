#include "ood_gate.h"

#include <ATen/ATen.h>

#include <limits>

namespace bertgate {

OodGate::OodGate(const std::vector<float>& projection, const std::vector<float>& centres, int64_t dim,
                 const c10::Device& device)
    : width_(static_cast<int64_t>(projection.size()) / dim) {
  const auto host = at::TensorOptions().dtype(at::kFloat);
  const int64_t classes = static_cast<int64_t>(centres.size()) / dim;
  // Cloned out of the vectors (from_blob borrows; on a CPU neither contiguous() nor to() need
  // copy), then moved to the device once, at load.
  projection_t_ = at::from_blob(const_cast<float*>(projection.data()), {dim, width_}, host).t().clone().to(device);
  centres_t_ = at::from_blob(const_cast<float*>(centres.data()), {classes, dim}, host).t().clone().to(device);
  centre_norms_ = centres_t_.pow(2).sum(0);
}

at::Tensor OodGate::Scores(const at::Tensor& features) const {
  // |z - m_c|^2 = |z|^2 - 2 z.m_c + |m_c|^2 for every class at once: two small matmuls.
  const at::Tensor z = at::matmul(features.to(at::kFloat), projection_t_);  // [rows, dim]
  const at::Tensor distances =
      z.pow(2).sum(1, true) - 2 * at::matmul(z, centres_t_) + centre_norms_;  // [rows, classes]
  // min() skips NaN on some backends: a NaN row is made NaN explicitly.
  const at::Tensor nearest = std::get<0>(distances.min(1));
  return at::where(z.isnan().any(1), at::full_like(nearest, std::numeric_limits<float>::quiet_NaN()), nearest);
}

}  // namespace bertgate
