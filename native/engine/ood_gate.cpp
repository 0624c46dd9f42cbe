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
  centres_ = at::from_blob(const_cast<float*>(centres.data()), {classes, dim}, host).clone().to(device);
}

at::Tensor OodGate::Scores(const at::Tensor& features) const {
  const at::Tensor z = at::matmul(features.to(at::kFloat), projection_t_);  // [rows, dim]
  // (z - m_c)^2 summed, for every class at once. Not |z|^2 - 2 z.m_c + |m_c|^2: in fp32 that
  // cancels digits when z sits near a centre far from the origin, and it is what calibrate's
  // float64 reference computes. rows x classes x dim floats is small (256 x 50 x 128: 6.5 MB).
  const at::Tensor distances = (z.unsqueeze(1) - centres_.unsqueeze(0)).pow(2).sum(2);  // [rows, classes]
  // min() skips NaN on some backends: a NaN row is made NaN explicitly.
  const at::Tensor nearest = std::get<0>(distances.min(1));
  return at::where(z.isnan().any(1), at::full_like(nearest, std::numeric_limits<float>::quiet_NaN()), nearest);
}

}  // namespace bertgate
