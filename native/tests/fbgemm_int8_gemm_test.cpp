// fbgemm's int8 GEMM as the operator calls it (u8 activations, the shift taken off) against exact
// int64 sums, and bertgate::linear_int8 on it against the same operator on oneDNN's GEMM: the same
// bits. Where fbgemm does not run (a CPU without AVX2, an engine built without fbgemm) these skip,
// saying so; the operator then keeps oneDNN's GEMM, which int8_linear_test.cpp covers.

#include "../engine/fbgemm_int8_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

#include "../engine/amx_int8_gemm.h"
#include "../engine/int8_linear.h"

namespace bertgate {
namespace {

#define SKIP_WITHOUT_FBGEMM() \
  if (!FbgemmInt8Available()) GTEST_SKIP() << "fbgemm does not run here (no AVX2, or a libtorch without fbgemm)"

// a: s8 activations within [-127, 127]; w: weights within [-64, 64].
at::Tensor Gemm(const at::Tensor& a, const at::Tensor& w) {
  const FbgemmPacked packed = PackForFbgemm(w);
  const at::Tensor u = a.to(at::kInt).add(128).to(at::kByte).contiguous();  // the flipped bytes
  at::Tensor c = at::full({a.size(0), w.size(0) + 3}, -7, at::kInt);        // ldc past N
  FbgemmInt8Gemm(u.data_ptr<uint8_t>(), a.size(0), a.size(1), *packed, c.data_ptr<int32_t>(), c.size(1));
  EXPECT_TRUE(at::equal(c.narrow(1, w.size(0), 3), at::full({a.size(0), 3}, -7, at::kInt)));  // nothing past N
  return c.narrow(1, 0, w.size(0));
}

at::Tensor Exact(const at::Tensor& a, const at::Tensor& w) {
  return at::matmul(a.to(at::kLong), w.to(at::kLong).t()).to(at::kInt);
}

TEST(FbgemmInt8Gemm, MatchesExactSumsOnOddShapesAndTheOperatorsFullRange) {
  SKIP_WITHOUT_FBGEMM();
  at::manual_seed(21);
  for (const auto& [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {3, 13, 7}, {17, 63, 33}, {32, 64, 32}, {33, 65, 31}, {130, 384, 1536}, {5, 1536, 384}}) {
    const at::Tensor a = at::randint(-127, 128, {m, k}, at::kChar);
    const at::Tensor w = at::randint(-64, 65, {n, k}, at::kChar);
    EXPECT_TRUE(at::equal(Gemm(a, w), Exact(a, w))) << m << "x" << k << "x" << n;
  }
  // The extremes, where an int16 pair sum (fbgemm without VNNI) is closest to saturating:
  // u8 255 (s8 127) and u8 1 (s8 -127) against weights of +-64.
  for (const int64_t av : {127, -127}) {
    for (const int64_t wv : {64, -64}) {
      const at::Tensor a = at::full({16, 1536}, av, at::kChar);
      const at::Tensor w = at::full({16, 1536}, wv, at::kChar);
      EXPECT_EQ(Gemm(a, w)[3][5].item<int32_t>(), 1536 * av * wv) << av << " x " << wv;
    }
  }
}

TEST(FbgemmInt8Gemm, GivesTheSameSumsOnEveryIntraOpThreadCount) {
  SKIP_WITHOUT_FBGEMM();
  at::manual_seed(22);
  const at::Tensor a = at::randint(-127, 128, {301, 384}, at::kChar);
  const at::Tensor w = at::randint(-64, 65, {1536, 384}, at::kChar);
  const int before = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one = Gemm(a, w);
  at::set_num_threads(2);
  const at::Tensor two = Gemm(a, w);
  at::set_num_threads(before);
  EXPECT_TRUE(at::equal(one, two));
  EXPECT_TRUE(at::equal(one, Exact(a, w)));
}

TEST(FbgemmInt8Gemm, LinearInt8OnItGivesOneDnnsBitsAndDropsAWeightWrittenSince) {
  SKIP_WITHOUT_FBGEMM();
  at::manual_seed(23);
  at::Tensor w = at::randint(-64, 65, {1536, 384}, at::kChar);
  const at::Tensor scale = at::rand({1536}) * 0.01 + 1e-3, bias = at::randn({1536});
  // Rows of every kind the quantizer meets: ordinary, all zeros, one holding NaN.
  at::Tensor x = at::randn({3, 97, 384});
  x[1][4].zero_();
  x[2][9][17] = std::numeric_limits<float>::quiet_NaN();
  const at::Tensor onednn = LinearInt8(x, w, scale, bias, kActivationGelu);  // no scope: oneDNN
  Int8WeightTable table;
  table.Add(w, Int8WeightTable::Packing::kFbgemm);
  ASSERT_NE(table.Find(w), nullptr);
  ASSERT_NE(table.Find(w)->fbgemm, nullptr);
  EXPECT_EQ(table.Find(w)->packed, nullptr);  // not packed for AMX as well
  const Int8GemmScope scope(&table);
  const at::Tensor fbgemm = LinearInt8(x, w, scale, bias, kActivationGelu);
  EXPECT_TRUE(at::equal(fbgemm.isnan(), onednn.isnan()));
  EXPECT_TRUE(at::equal(at::nan_to_num(fbgemm), at::nan_to_num(onednn)));
  EXPECT_TRUE(fbgemm[2][9].isnan().all().item<bool>());   // the NaN row, NaN throughout
  EXPECT_FALSE(fbgemm[2][8].isnan().any().item<bool>());  // and no other
  // Written after packing: the table no longer serves it, and the result follows the new weight.
  w[7][9] = w[7][9].item<int8_t>() == 5 ? 6 : 5;
  ASSERT_EQ(table.Find(w), nullptr);
  const at::Tensor after = LinearInt8(x, w, scale, bias, kActivationGelu);
  EXPECT_FALSE(at::equal(at::nan_to_num(after), at::nan_to_num(fbgemm)));
}

// Bookkeeping: runs on every CPU.
TEST(FbgemmInt8Gemm, LeavesAWeightPastWhatItsPackerSizesOnOneDnn) {
  // fbgemm sizes its packed buffer in a 32-bit int; a layer near 2 GiB would overflow inside it.
  // An expanded tensor has the sizes without the memory.
  const at::Tensor huge = at::zeros({1, 1}, at::kChar).expand({70000, 70000});
  EXPECT_FALSE(FbgemmCanPack(huge));
  EXPECT_TRUE(FbgemmCanPack(at::zeros({1536, 384}, at::kChar)));
  EXPECT_FALSE(FbgemmCanPack(at::zeros({4, 4}, at::kFloat)));
  Int8WeightTable table;
  table.Add(huge, Int8WeightTable::Packing::kFbgemm);
  ASSERT_NE(table.Find(huge), nullptr);  // held (vetted) all the same
  EXPECT_EQ(table.Find(huge)->fbgemm, nullptr);
}

}  // namespace
}  // namespace bertgate
