// The fused CPU log-softmax against at::log_softmax in fp64, on fresh random logits each
// run (the seed is printed so a failure can be replayed).

#include "../engine/fused_log_softmax.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <vector>

#include "random_logits.h"

namespace bertgate {
namespace {

struct Result {
  std::vector<int32_t> top_index;
  std::vector<float> top_log_prob, margin, entropy, energy, log_probs;
  std::vector<uint8_t> valid;
};

// Fills every output with a poison value first, so a slot the kernel forgets to write fails.
Result RunKernel(const at::Tensor& logits, float temperature, int top_k) {
  const int64_t rows = logits.size(0), cols = logits.size(1);
  const float poison = 12345.0f;
  Result r;
  r.top_index.assign(rows * top_k, 777);
  r.top_log_prob.assign(rows * top_k, poison);
  r.margin.assign(rows, poison);
  r.entropy.assign(rows, poison);
  r.energy.assign(rows, poison);
  r.log_probs.assign(rows * cols, poison);
  r.valid.assign(rows, 9);
  const at::Tensor c = logits.contiguous();
  LogitsType type = LogitsType::kFloat32;
  if (c.scalar_type() == at::kHalf) type = LogitsType::kFloat16;
  if (c.scalar_type() == at::kBFloat16) type = LogitsType::kBFloat16;
  FusedLogSoftmaxCpu(c.const_data_ptr(), type, rows, cols, SoftmaxOptions{temperature, top_k},
                     SoftmaxOutputs{r.top_index.data(), r.top_log_prob.data(), r.margin.data(), r.entropy.data(),
                                    r.energy.data(), r.valid.data(), r.log_probs.data()});
  return r;
}

void ExpectMatchesReference(const at::Tensor& z_in, float temperature, int top_k, double tol) {
  const int64_t rows = z_in.size(0), cols = z_in.size(1);
  const Result r = RunKernel(z_in, temperature, top_k);
  // The reference starts from exactly the fp32 values x = float(z) / T that the kernel sees;
  // rounding z / T to fp32 is inherent to fp32 scaling, not the kernel's error to measure.
  at::Tensor x32 = z_in.to(at::kFloat).contiguous().clone();
  float* xp = x32.data_ptr<float>();
  for (int64_t i = 0; i < x32.numel(); ++i) xp[i] = xp[i] / temperature;
  const at::Tensor x = x32.to(at::kDouble);
  const at::Tensor ref_t = at::log_softmax(x, 1);
  const at::Tensor entropy_t = -(ref_t.exp() * ref_t).sum(1);
  const at::Tensor energy_t = -static_cast<double>(temperature) * at::logsumexp(x, 1);
  const auto [top_t, idx_t] = at::topk(ref_t, std::max(top_k, 2), 1);
  const auto ref = ref_t.accessor<double, 2>();
  const auto ref_top = top_t.accessor<double, 2>();
  const auto ref_entropy = entropy_t.accessor<double, 1>();
  const auto ref_energy = energy_t.accessor<double, 1>();
  const auto near = [tol](double got, double want) {
    return std::abs(got - want) <= tol * std::max(1.0, std::abs(want));
  };

  for (int64_t i = 0; i < rows; ++i) {
    SCOPED_TRACE("row " + std::to_string(i) + " of " + std::to_string(rows) + "x" + std::to_string(cols) + ", T " +
                 std::to_string(temperature) + ", seed " + std::to_string(Seed()));
    ASSERT_EQ(r.valid[i], 1);
    for (int64_t j = 0; j < cols; ++j) {
      ASSERT_PRED2(near, r.log_probs[i * cols + j], ref[i][j]) << "class " << j;
    }
    for (int j = 0; j < top_k; ++j) {
      // Values must follow the reference order; an index may differ only inside a tie.
      const int32_t got = r.top_index[i * top_k + j];
      ASSERT_PRED2(near, r.top_log_prob[i * top_k + j], ref_top[i][j]);
      ASSERT_GE(got, 0);
      ASSERT_LT(got, cols);
      ASSERT_PRED2(near, ref[i][got], ref_top[i][j]);
    }
    ASSERT_NEAR(r.margin[i], std::exp(ref_top[i][0]) - std::exp(ref_top[i][1]), tol);
    ASSERT_PRED2(near, r.entropy[i], ref_entropy[i]);
    ASSERT_PRED2(near, r.energy[i], ref_energy[i]);
  }
}

TEST(FusedLogSoftmax, MatchesReferenceAcrossClassCounts) {
  at::Generator gen = at::detail::createCPUGenerator(Seed());
  for (int64_t cols : {2, 3, 7, 50, 255, 256, 257, 1000, 30522}) {
    const int64_t rows = cols > 1000 ? 6 : 25;
    ExpectMatchesReference(RandomLogits(rows, cols, gen).to(at::kFloat), 1.0f, std::min<int64_t>(5, cols), 2e-5);
  }
}

TEST(FusedLogSoftmax, AppliesTemperature) {
  at::Generator gen = at::detail::createCPUGenerator(Seed() + 1);
  for (float t : {0.05f, 0.5f, 1.7f, 25.0f}) {
    ExpectMatchesReference(RandomLogits(20, 50, gen).to(at::kFloat), t, 3, 2e-5);
  }
}

TEST(FusedLogSoftmax, ReadsHalfPrecisionLogitsIntoFloat32) {
  at::Generator gen = at::detail::createCPUGenerator(Seed() + 2);
  // fp16 cannot hold 1e4 +- small noise distinctly, but the reference is built from the
  // same rounded values, so the fp32 arithmetic is held to the same tolerance.
  ExpectMatchesReference(RandomLogits(30, 50, gen).to(at::kHalf), 1.0f, 5, 2e-5);
  ExpectMatchesReference(RandomLogits(30, 50, gen).to(at::kBFloat16), 1.3f, 5, 2e-5);
  ExpectMatchesReference(RandomLogits(4, 30522, gen).to(at::kHalf), 1.0f, 5, 2e-5);
}

TEST(FusedLogSoftmax, SubtractsTheTrueMaxNotTheLargestMagnitude) {
  // With [-100, 5] a max-by-magnitude implementation computes exp(5 + 100) and overflows.
  const at::Tensor z = at::tensor({-100.0f, 5.0f}).reshape({1, 2});
  const Result r = RunKernel(z, 1.0f, 2);
  EXPECT_EQ(r.valid[0], 1);
  EXPECT_EQ(r.top_index[0], 1);
  EXPECT_NEAR(r.top_log_prob[0], 0.0, 1e-6);
  EXPECT_NEAR(r.top_log_prob[1], -105.0, 1e-4);
  EXPECT_TRUE(std::isfinite(r.entropy[0]));
}

TEST(FusedLogSoftmax, MarksNonFiniteRowsInvalidAndLeavesOthersAlone) {
  const float inf = std::numeric_limits<float>::infinity();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  at::Tensor z = at::randn({6, 300});
  z[1][7] = nan;
  z[2][299] = inf;  // in the second block: invalid even though the first block was fine
  z[3][0] = -inf;
  z[4].fill_(nan);
  const Result r = RunKernel(z, 1.0f, 3);
  for (int64_t i : {1, 2, 3, 4}) {
    SCOPED_TRACE("row " + std::to_string(i));
    EXPECT_EQ(r.valid[i], 0);
    for (int j = 0; j < 3; ++j) {
      EXPECT_EQ(r.top_index[i * 3 + j], -1);
      EXPECT_TRUE(std::isnan(r.top_log_prob[i * 3 + j]));
    }
    EXPECT_TRUE(std::isnan(r.margin[i]));
    EXPECT_TRUE(std::isnan(r.entropy[i]));
    EXPECT_TRUE(std::isnan(r.energy[i]));
    for (int64_t j = 0; j < 300; ++j) EXPECT_TRUE(std::isnan(r.log_probs[i * 300 + j]));
  }
  for (int64_t i : {0, 5}) {
    EXPECT_EQ(r.valid[i], 1);
    EXPECT_GE(r.top_index[i * 3], 0);
  }
}

TEST(FusedLogSoftmax, ScalingThatOverflowsMarksTheRowInvalid) {
  // 3e38 / 0.01 is +inf in fp32: a silent label would be wrong, so the row is invalid.
  const at::Tensor z = at::tensor({3e38f, 1.0f}).reshape({1, 2});
  EXPECT_EQ(RunKernel(z, 0.01f, 1).valid[0], 0);
}

TEST(FusedLogSoftmax, LogitsOfOppositeSignNearTheFp32LimitGiveTheTrueEntropy) {
  // 3e38 - (-3e38) overflows fp32; the row is still valid and all its mass is on one label,
  // so its entropy is 0, not NaN (0 * -inf) or +inf.
  const at::Tensor z = at::tensor({3e38f, -3e38f, -1.7e38f, 1.7e38f, 3e38f, -3e38f}).reshape({2, 3});
  const Result r = RunKernel(z, 1.0f, 2);
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE("row " + std::to_string(i));
    EXPECT_EQ(r.valid[i], 1);
    EXPECT_NEAR(r.entropy[i], 0.0, 1e-6);
    EXPECT_NEAR(r.top_log_prob[i * 2], 0.0, 1e-6);
    EXPECT_NEAR(r.margin[i], 1.0, 1e-6);
    EXPECT_FLOAT_EQ(r.energy[i], -3e38f);
  }
  EXPECT_EQ(r.top_index[0], 0);
  EXPECT_EQ(r.top_index[2], 1);
}

TEST(FusedLogSoftmax, TiesKeepTheLowerIndexFirst) {
  const at::Tensor z = at::tensor({1.0f, 3.0f, 3.0f, 0.0f, 3.0f}).reshape({1, 5});
  const Result r = RunKernel(z, 1.0f, 3);
  EXPECT_EQ(r.top_index[0], 1);
  EXPECT_EQ(r.top_index[1], 2);
  EXPECT_EQ(r.top_index[2], 4);
  EXPECT_NEAR(r.margin[0], 0.0, 1e-7);
}

}  // namespace
}  // namespace bertgate
