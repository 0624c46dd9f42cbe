#pragma once
// The out-of-distribution score of a batch's pooled features, in the same pass as its logits:
// the smallest squared distance to a class centre after the projection calibrate fitted
// (lib/calibration/gate.ts: the within-class covariance's least-variance directions, whitened), so
// that it is a Mahalanobis distance to the nearest class. Computed with ATen on the features'
// own device: on a GPU the features never leave it, only the score per row does.

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <vector>

namespace bertgate {

class OodGate {
 public:
  // projection: [dim, width]; centres: [classes, dim]; both row-major, as LoadOptions holds them.
  OodGate(const std::vector<float>& projection, const std::vector<float>& centres, int64_t dim,
          const c10::Device& device);
  int64_t width() const { return width_; }
  // features [rows, width], any floating dtype, on the gate's device; returns [rows] fp32 there.
  // A row with NaN features scores NaN.
  at::Tensor Scores(const at::Tensor& features) const;

 private:
  int64_t width_;
  at::Tensor projection_t_;  // [width, dim]
  at::Tensor centres_;       // [classes, dim]
};

}  // namespace bertgate
