// The AMX int8 GEMM against exact int64 sums, and a model's table of packed weights against the
// ways a packed copy could go stale: a weight written in place or through a view, a weight freed
// and another allocated where it was. On a CPU without AMX the GEMM's tests skip, saying so (the
// operator then never calls the kernel; int8_linear_test.cpp covers the path it takes instead);
// the table's run everywhere.

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
  const auto packed = PackForAmx(w);
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

// The table is plain bookkeeping: these run on every CPU.
TEST(Int8WeightTable, FindsTheTensorItPackedAndNothingElse) {
  at::manual_seed(13);
  Int8WeightTable table;
  const at::Tensor w = at::randint(-64, 65, {40, 70}, at::kChar);
  table.Add(w, Int8WeightTable::Packing::kAmx);
  table.Add(w, Int8WeightTable::Packing::kAmx);
  EXPECT_EQ(table.size(), 1u);
  const Int8WeightTable::Entry* entry = table.Find(w);
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(table.Find(w), entry);
  ASSERT_NE(entry->packed, nullptr);
  EXPECT_EQ(entry->packed->n, 40);
  EXPECT_EQ(entry->packed->k_padded, 128);
  // Another tensor over the same bytes is found only in the same geometry.
  EXPECT_EQ(table.Find(w.view({40, 70})), entry);
  EXPECT_EQ(table.Find(w.narrow(0, 0, 16)), nullptr);
  EXPECT_EQ(table.Find(w.narrow(1, 0, 35)), nullptr);
  EXPECT_EQ(table.Find(w.view({70, 40})), nullptr);
  // Equal values elsewhere are another weight.
  EXPECT_EQ(table.Find(w.clone()), nullptr);
}

TEST(Int8WeightTable, PacksOnlyWhereAsked) {
  Int8WeightTable table;
  const at::Tensor w = at::randint(-64, 65, {8, 16}, at::kChar);
  table.Add(w, Int8WeightTable::Packing::kNone);
  ASSERT_NE(table.Find(w), nullptr);
  EXPECT_EQ(table.Find(w)->packed, nullptr);  // held (vetted), run on oneDNN
}

TEST(Int8WeightTable, NeverServesAWeightWrittenAfterItWasPacked) {
  Int8WeightTable table;
  at::Tensor w = at::randint(-64, 65, {24, 96}, at::kChar);
  table.Add(w, Int8WeightTable::Packing::kAmx);
  ASSERT_NE(table.Find(w), nullptr);
  w.neg_();
  EXPECT_EQ(table.Find(w), nullptr);
  // Written through a view: views share the weight's version counter.
  at::Tensor v = at::randint(-64, 65, {8, 8}, at::kChar);
  Int8WeightTable other;
  other.Add(v, Int8WeightTable::Packing::kAmx);
  v.narrow(0, 2, 1).fill_(3);
  EXPECT_EQ(other.Find(v), nullptr);
}

TEST(Int8WeightTable, KeepsItsWeightsAliveSoNoNewTensorTakesTheirPlace) {
  Int8WeightTable table;
  const void* address = nullptr;
  {
    const at::Tensor w = at::randint(-64, 65, {48, 128}, at::kChar);
    address = w.data_ptr();
    table.Add(w, Int8WeightTable::Packing::kAmx);
  }
  // The allocator would hand the same memory back; the table still holds it, so it cannot.
  for (int i = 0; i < 50; ++i) {
    const at::Tensor w = at::randint(-64, 65, {48, 128}, at::kChar);
    EXPECT_NE(w.data_ptr(), address);
    EXPECT_EQ(table.Find(w), nullptr);
  }
}

TEST(Int8WeightTable, IsActiveOnlyInsideItsScopeAndOnItsThread) {
  Int8WeightTable table, inner_table;
  EXPECT_EQ(ActiveInt8WeightTable(), nullptr);
  {
    const Int8GemmScope scope(&table);
    EXPECT_EQ(ActiveInt8WeightTable(), &table);
    {
      const Int8GemmScope inner(&inner_table);
      EXPECT_EQ(ActiveInt8WeightTable(), &inner_table);
      const Int8GemmScope none(nullptr);
      EXPECT_EQ(ActiveInt8WeightTable(), nullptr);
    }
    EXPECT_EQ(ActiveInt8WeightTable(), &table);
    // Another thread (a torch.jit.fork task, say) is not this one's scope.
    const Int8WeightTable* elsewhere = &table;
    std::thread([&] { elsewhere = ActiveInt8WeightTable(); }).join();
    EXPECT_EQ(elsewhere, nullptr);
  }
  EXPECT_EQ(ActiveInt8WeightTable(), nullptr);
}

TEST(AmxInt8Gemm, LinearInt8OnItEqualsExactArithmetic) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(15);
  const at::Tensor w = at::randint(-64, 65, {1536, 384}, at::kChar);
  const at::Tensor scale = at::rand({1536}) * 0.01 + 1e-3, bias = at::randn({1536});
  const at::Tensor x = at::randn({200, 384}) * 4;
  Int8WeightTable table;
  table.Add(w, Int8WeightTable::Packing::kAmx);
  const Int8GemmScope scope(&table);
  const at::Tensor got = LinearInt8(x, w, scale, bias, kActivationNone);
  const at::Tensor amax = x.abs().amax({1}, true);
  const at::Tensor s = amax / 127.0;
  const at::Tensor q = at::round((x * (1.0 / s)).clamp(-127, 127)).to(at::kChar);
  EXPECT_TRUE(at::equal(got, Exact(q, w).to(at::kFloat) * s * scale + bias));
}

TEST(AmxInt8Gemm, LinearInt8GivesTheSameBitsOnAmxAndOnOneDnnWhateverTheTableHolds) {
  SKIP_WITHOUT_AMX();
  at::manual_seed(16);
  at::Tensor w = at::randint(-64, 65, {1536, 384}, at::kChar);
  const at::Tensor scale = at::rand({1536}) * 0.01 + 1e-3, bias = at::randn({1536});
  const at::Tensor x = at::randn({3, 97, 384});
  const at::Tensor onednn = LinearInt8(x, w, scale, bias, kActivationGelu);  // no scope: oneDNN
  Int8WeightTable table;
  table.Add(w, Int8WeightTable::Packing::kAmx);
  const Int8GemmScope scope(&table);
  EXPECT_TRUE(at::equal(LinearInt8(x, w, scale, bias, kActivationGelu), onednn));
  // Written after packing: the table no longer serves it, and the result follows the new weight.
  w[7][9] = w[7][9].item<int8_t>() == 5 ? 6 : 5;  // another value within [-64, 64]
  ASSERT_EQ(table.Find(w), nullptr);
  const at::Tensor written = LinearInt8(x, w, scale, bias, kActivationGelu);
  const Int8GemmScope none(nullptr);
  EXPECT_TRUE(at::equal(written, LinearInt8(x, w, scale, bias, kActivationGelu)));
  EXPECT_FALSE(at::equal(written, onednn));
}

}  // namespace
}  // namespace bertgate
