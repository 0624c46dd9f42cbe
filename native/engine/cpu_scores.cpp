#include "cpu_scores.h"

#include <ATen/ATen.h>

#include <cstring>

#include "fused_log_softmax.h"
#include "logits.h"

namespace bertgate {

// The CPU kernel reads fp16/bf16 directly, so half-precision logits cross as they are.
void ScoresOnHost(const at::Tensor& logits, const InferInput& in, InferOutput& out) {
  const at::Tensor host = logits.to(at::kCPU).contiguous();
  const int64_t rows = host.size(0), cols = host.size(1), k = in.top_k;
  out.top_index.resize(rows * k);
  out.top_log_prob.resize(rows * k);
  out.margin.resize(rows);
  out.entropy.resize(rows);
  out.energy.resize(rows);
  out.valid.resize(rows);
  if (in.want_log_probs) out.log_probs.resize(rows * cols);
  SoftmaxOptions options;
  options.temperature = in.temperature;
  options.top_k = in.top_k;
  const SoftmaxOutputs views{out.top_index.data(),
                             out.top_log_prob.data(),
                             out.margin.data(),
                             out.entropy.data(),
                             out.energy.data(),
                             out.valid.data(),
                             in.want_log_probs ? out.log_probs.data() : nullptr};
  FusedLogSoftmaxCpu(host.const_data_ptr(), LogitsTypeOf(host), rows, cols, options, views);
  if (in.want_logits) {
    const at::Tensor f32 = host.to(at::kFloat).contiguous();
    out.logits.resize(rows * cols);
    std::memcpy(out.logits.data(), f32.const_data_ptr<float>(), sizeof(float) * rows * cols);
  }
}

}  // namespace bertgate
