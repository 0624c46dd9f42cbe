// The CUDA kernel against at::log_softmax in fp64, on fresh random logits each run, with the
// outputs poisoned before the launch. Built with CUDA only; skipped without a CUDA device.

#include "../engine/fused_log_softmax_cuda.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAStream.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "../engine/fused_log_softmax.h"
#include "random_logits.h"

namespace bertgate {
namespace {

struct DeviceResult {
  at::Tensor top_index, top_log_prob, margin, entropy, energy, valid, log_probs;
};

DeviceResult RunOnDevice(const at::Tensor& host_logits, float temperature, int top_k) {
  const auto cuda = at::TensorOptions().device(at::kCUDA);
  const at::Tensor z = host_logits.to(at::kCUDA).contiguous();
  const int64_t rows = z.size(0), cols = z.size(1);
  // Poisoned: a slot the kernel forgets to write keeps a value no test accepts.
  DeviceResult r{
      at::full({rows, top_k}, 777, cuda.dtype(at::kInt)),     at::full({rows, top_k}, 12345.0, cuda.dtype(at::kFloat)),
      at::full({rows}, 12345.0, cuda.dtype(at::kFloat)),      at::full({rows}, 12345.0, cuda.dtype(at::kFloat)),
      at::full({rows}, 12345.0, cuda.dtype(at::kFloat)),      at::full({rows}, 9, cuda.dtype(at::kByte)),
      at::full({rows, cols}, 12345.0, cuda.dtype(at::kFloat))};
  LogitsType type = LogitsType::kFloat32;
  if (z.scalar_type() == at::kHalf) type = LogitsType::kFloat16;
  if (z.scalar_type() == at::kBFloat16) type = LogitsType::kBFloat16;
  const SoftmaxOutputs out{r.top_index.data_ptr<int32_t>(), r.top_log_prob.data_ptr<float>(),
                           r.margin.data_ptr<float>(),      r.entropy.data_ptr<float>(),
                           r.energy.data_ptr<float>(),      r.valid.data_ptr<uint8_t>(),
                           r.log_probs.data_ptr<float>()};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  EXPECT_EQ(FusedLogSoftmaxCuda(z.const_data_ptr(), type, rows, cols, SoftmaxOptions{temperature, top_k}, out, stream),
            cudaSuccess);
  EXPECT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
  return {r.top_index.cpu(), r.top_log_prob.cpu(), r.margin.cpu(),   r.entropy.cpu(),
          r.energy.cpu(),    r.valid.cpu(),        r.log_probs.cpu()};
}

void ExpectMatchesReference(const at::Tensor& z_in, float temperature, int top_k, double tol) {
  const DeviceResult r = RunOnDevice(z_in, temperature, top_k);
  at::Tensor x32 = z_in.to(at::kFloat).contiguous().clone();
  float* xp = x32.data_ptr<float>();
  for (int64_t i = 0; i < x32.numel(); ++i) xp[i] = xp[i] / temperature;
  const at::Tensor x = x32.to(at::kDouble);
  const at::Tensor ref = at::log_softmax(x, 1);
  const at::Tensor entropy = -(ref.exp() * ref).sum(1);
  const at::Tensor energy = -static_cast<double>(temperature) * at::logsumexp(x, 1);
  const auto top = std::get<0>(at::topk(ref, std::max(top_k, 2), 1));
  const auto near = [tol](const at::Tensor& got, const at::Tensor& want) {
    return ((got.to(at::kDouble) - want).abs() <= tol * want.abs().clamp_min(1.0)).all().item<bool>();
  };
  SCOPED_TRACE("shape " + std::to_string(z_in.size(0)) + "x" + std::to_string(z_in.size(1)) + ", seed " +
               std::to_string(Seed()));
  EXPECT_TRUE((r.valid == 1).all().item<bool>());
  EXPECT_TRUE(near(r.log_probs, ref));
  EXPECT_TRUE(near(r.top_log_prob, top.slice(1, 0, top_k)));
  EXPECT_TRUE(near(ref.gather(1, r.top_index.to(at::kLong)), top.slice(1, 0, top_k)));  // ties may swap indices
  EXPECT_TRUE(near(r.entropy, entropy));
  EXPECT_TRUE(near(r.energy, energy));
  EXPECT_TRUE(near(r.margin, top.select(1, 0).exp() - top.select(1, 1).exp()));
}

class FusedLogSoftmaxCudaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

TEST_F(FusedLogSoftmaxCudaTest, MatchesReferenceAcrossClassCounts) {
  at::Generator gen = at::detail::createCPUGenerator(Seed());
  for (int64_t cols : {2, 3, 7, 50, 255, 256, 257, 1000, 30522}) {
    ExpectMatchesReference(RandomLogits(cols > 1000 ? 8 : 64, cols, gen).to(at::kFloat), 1.0f,
                           static_cast<int>(std::min<int64_t>(5, cols)), 2e-5);
  }
}

TEST_F(FusedLogSoftmaxCudaTest, TemperatureTopKAndHalfPrecision) {
  at::Generator gen = at::detail::createCPUGenerator(Seed() + 1);
  ExpectMatchesReference(RandomLogits(33, 50, gen).to(at::kFloat), 0.3f, 20, 2e-5);
  ExpectMatchesReference(RandomLogits(33, 50, gen).to(at::kHalf), 1.0f, 5, 2e-5);
  ExpectMatchesReference(RandomLogits(33, 50, gen).to(at::kBFloat16), 2.0f, 5, 2e-5);
  ExpectMatchesReference(RandomLogits(4, 30522, gen).to(at::kHalf), 1.0f, 64, 2e-5);
}

TEST_F(FusedLogSoftmaxCudaTest, MarksNonFiniteRowsInvalid) {
  at::Tensor z = at::randn({4, 700});
  z[1][650] = std::numeric_limits<float>::quiet_NaN();
  z[2][3] = -std::numeric_limits<float>::infinity();
  const DeviceResult r = RunOnDevice(z, 1.0f, 3);
  EXPECT_EQ(r.valid[0].item<int>(), 1);
  EXPECT_EQ(r.valid[1].item<int>(), 0);
  EXPECT_EQ(r.valid[2].item<int>(), 0);
  EXPECT_EQ(r.valid[3].item<int>(), 1);
  EXPECT_TRUE((r.top_index[1] == -1).all().item<bool>());
  EXPECT_TRUE(std::isnan(r.entropy[2].item<float>()));
  EXPECT_TRUE(r.log_probs[1].isnan().all().item<bool>());
}

// Where fp32 itself runs out (differences to the max overflow), the device gives the CPU's
// answers: a valid row, entropy 0, not NaN.
TEST_F(FusedLogSoftmaxCudaTest, AgreesWithTheCpuKernelNearTheFp32Limit) {
  const at::Tensor z =
      at::tensor({3e38f, -3e38f, 0.0f, -1.7e38f, 1.7e38f, 5.0f, -3e38f, -3e38f, 3e38f}).reshape({3, 3});
  const DeviceResult d = RunOnDevice(z, 1.0f, 2);
  std::vector<int32_t> top_index(6);
  std::vector<float> top_log_prob(6), margin(3), entropy(3), energy(3), log_probs(9);
  std::vector<uint8_t> valid(3);
  FusedLogSoftmaxCpu(z.const_data_ptr(), LogitsType::kFloat32, 3, 3, SoftmaxOptions{1.0f, 2},
                     SoftmaxOutputs{top_index.data(), top_log_prob.data(), margin.data(), entropy.data(), energy.data(),
                                    valid.data(), log_probs.data()});
  for (int64_t i = 0; i < 3; ++i) {
    SCOPED_TRACE("row " + std::to_string(i));
    EXPECT_EQ(d.valid[i].item<int>(), 1);
    EXPECT_EQ(valid[i], 1);
    EXPECT_FALSE(std::isnan(d.entropy[i].item<float>()));
    EXPECT_NEAR(d.entropy[i].item<float>(), entropy[i], 1e-6);
    EXPECT_NEAR(d.margin[i].item<float>(), margin[i], 1e-6);
    EXPECT_FLOAT_EQ(d.energy[i].item<float>(), energy[i]);
    EXPECT_EQ(d.top_index[i][0].item<int>(), top_index[i * 2]);
  }
}

}  // namespace
}  // namespace bertgate
