// The AMX int8 GEMM against exact int64 sums, and its cache of packed weights against the ways a
// cached copy could go stale: a weight written in place, a weight freed and another allocated
// where it was. On a CPU without AMX these tests skip, saying so (the operator then never calls
// the kernel; int8_linear_test.cpp covers the path it takes instead).

#include "../engine/amx_int8_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <tuple>
#include <vector>

#include "../engine/int8_linear.h"

namespace bertgate {
namespace {

// Rows of a padded to whole tiles, as the operator lays them out.
at::Tensor PadA(const at::Tensor& a, int64_t k_padded) {
  at::Tensor padded = at::zeros({RoundUp(a.size(0), kAmxRowPad), k_padded}, at::kChar);
  padded.narrow(0, 0, a.size(0)).narrow(1, 0, a.size(1)).copy_(a);
  return padded;
}

at::Tensor Gemm(const at::Tensor& a, const at::Tensor& w) {
  const auto packed = AmxPackedWeightFor(w);
  const at::Tensor pa = PadA(a, packed->k_padded);
  at::Tensor c = at::full({pa.size(0), packed->n_padded}, -7, at::kInt);
  AmxInt8Gemm(pa.data_ptr<int8_t>(), pa.size(0), pa.size(1), *packed, c.data_ptr<int32_t>(), c.size(1));
  return c.narrow(0, 0, a.size(0)).narrow(1, 0, w.size(0));
}

at::Tensor Exact(const at::Tensor& a, const at::Tensor& w) {
  return at::matmul(a.to(at::kLong), w.to(at::kLong).t()).to(at::kInt);
}

#define SKIP_WITHOUT_AMX() \
  if (!AmxInt8Available()) GTEST_SKIP() << "this CPU has no AMX (or the kernel refused it the tiles)"

TEST(AmxInt8Gemm, MatchesExactSumsOnOddShapesAndTheFullInt8Range) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(11);
  for (const auto& [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {3, 13, 7}, {17, 63, 33}, {32, 64, 32}, {33, 65, 31}, {130, 384, 1536}, {5, 1536, 384}}) {
    const at::Tensor a = at::randint(-128, 128, {m, k}, at::kChar);
    const at::Tensor w = at::randint(-128, 128, {n, k}, at::kChar);
    EXPECT_TRUE(at::equal(Gemm(a, w), Exact(a, w))) << m << "x" << k << "x" << n;
  }
  // The extremes, where an int16 intermediate would saturate: 1536 products of -128 x -128.
  const at::Tensor a = at::full({16, 1536}, -128, at::kChar);
  const at::Tensor w = at::full({16, 1536}, -128, at::kChar);
  EXPECT_EQ(Gemm(a, w)[3][5].item<int32_t>(), 1536 * 128 * 128);
}

TEST(AmxInt8Gemm, GivesTheSameSumsOnEveryIntraOpThreadCount) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(12);
  const at::Tensor a = at::randint(-127, 128, {70, 200}, at::kChar);
  const at::Tensor w = at::randint(-64, 65, {300, 200}, at::kChar);
  const int threads = at::get_num_threads();
  const at::Tensor one = (at::set_num_threads(1), Gemm(a, w));
  const at::Tensor four = (at::set_num_threads(4), Gemm(a, w));
  at::set_num_threads(threads);
  EXPECT_TRUE(at::equal(one, four));
  EXPECT_TRUE(at::equal(one, Exact(a, w)));
}

TEST(AmxInt8Gemm, PacksAWeightOnceWhileItLivesUnchanged) {
  SKIP_WITHOUT_AMX();
  const at::Tensor w = at::randint(-64, 65, {40, 70}, at::kChar);
  const auto first = AmxPackedWeightFor(w);
  EXPECT_EQ(AmxPackedWeightFor(w).get(), first.get());
  // Another view of the same storage is another weight.
  EXPECT_NE(AmxPackedWeightFor(w.narrow(0, 8, 16)).get(), first.get());
}

TEST(AmxInt8Gemm, RepacksAWeightWrittenInPlace) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(13);
  at::Tensor w = at::randint(-64, 65, {24, 96}, at::kChar);
  const at::Tensor a = at::randint(-127, 128, {9, 96}, at::kChar);
  ASSERT_TRUE(at::equal(Gemm(a, w), Exact(a, w)));
  w.neg_();
  EXPECT_TRUE(at::equal(Gemm(a, w), Exact(a, w)));
  w[3][4] = 60;
  EXPECT_TRUE(at::equal(Gemm(a, w), Exact(a, w)));
}

TEST(AmxInt8Gemm, NeverServesAFreedWeightsPackingToTheWeightAllocatedInItsPlace) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(14);
  const at::Tensor a = at::randint(-127, 128, {5, 128}, at::kChar);
  // The allocator hands the same memory back time after time; each weight differs.
  for (int i = 0; i < 200; ++i) {
    const at::Tensor w = at::randint(-64, 65, {48, 128}, at::kChar);
    ASSERT_TRUE(at::equal(Gemm(a, w), Exact(a, w))) << "round " << i;
  }
}

TEST(AmxInt8Gemm, LinearInt8OnItEqualsExactArithmetic) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(15);
  const at::Tensor w = at::randint(-64, 65, {1536, 384}, at::kChar);
  const at::Tensor scale = at::rand({1536}) * 0.01 + 1e-3, bias = at::randn({1536});
  const at::Tensor x = at::randn({200, 384}) * 4;
  const at::Tensor got = LinearInt8(x, w, scale, bias, kActivationNone);
  const at::Tensor amax = x.abs().amax({1}, true);
  const at::Tensor s = amax / 127.0;
  const at::Tensor q = at::round((x * (1.0 / s)).clamp(-127, 127)).to(at::kChar);
  EXPECT_TRUE(at::equal(got, Exact(q, w).to(at::kFloat) * s * scale + bias));
}

TEST(AmxInt8Gemm, LinearInt8GivesTheSameBitsOnAmxAndOnOneDnnAndAScopeChoosesPerThread) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(16);
  const at::Tensor w = at::randint(-64, 65, {1536, 384}, at::kChar);
  const at::Tensor scale = at::rand({1536}) * 0.01 + 1e-3, bias = at::randn({1536});
  const at::Tensor x = at::randn({3, 97, 384});
  EXPECT_TRUE(AmxInt8Allowed());
  const at::Tensor amx = LinearInt8(x, w, scale, bias, kActivationGelu);
  at::Tensor onednn;
  {
    const Int8GemmScope scope(false);
    EXPECT_FALSE(AmxInt8Allowed());
    {
      const Int8GemmScope inner(true);
      EXPECT_TRUE(AmxInt8Allowed());
    }
    EXPECT_FALSE(AmxInt8Allowed());
    // Another thread is not this one's scope.
    bool elsewhere = false;
    std::thread([&] { elsewhere = AmxInt8Allowed(); }).join();
    EXPECT_TRUE(elsewhere);
    onednn = LinearInt8(x, w, scale, bias, kActivationGelu);
  }
  EXPECT_TRUE(AmxInt8Allowed());
  EXPECT_TRUE(at::equal(amx, onednn));
}

}  // namespace
}  // namespace bertgate
