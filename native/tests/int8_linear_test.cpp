// bertgate::linear_int8 against exact arithmetic (int64 sums of the same int8 rows), on the
// shapes a hostile graph could hand it: no rows, odd widths, views, half inputs, no bias; and
// through the dispatcher, as a loaded TorchScript graph calls it.

#include "../engine/int8_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>

#include "../engine/amx_int8_gemm.h"

namespace bertgate {
namespace {

// The operator's definition, in plain ATen ops and int64: rows to int8 with their own scale,
// exact integer sums, then the same fp32 products in the same order.
at::Tensor Exact(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& scale, const at::Tensor& bias) {
  const at::Tensor x = input.reshape({-1, input.size(-1)}).to(at::kFloat);
  const at::Tensor amax = x.abs().amax({1}, /*keepdim=*/true);
  const at::Tensor raw = amax / 127.0;
  const at::Tensor s = at::where(raw >= std::numeric_limits<float>::min(), raw, at::ones_like(raw));
  const at::Tensor q = at::round((x * (1.0 / s)).clamp(-127, 127)).to(at::kLong);
  const at::Tensor acc = at::matmul(q, weight.to(at::kLong).t()).to(at::kFloat);
  std::vector<int64_t> shape(input.sizes().begin(), input.sizes().end());
  shape.back() = weight.size(0);
  return (acc * s * scale + bias).view(shape);
}

struct Layer {
  at::Tensor weight, scale, bias;
};

Layer RandomLayer(int64_t n, int64_t k) {
  return {at::randint(-64, 65, {n, k}, at::kChar), at::rand({n}) * 0.01 + 1e-3, at::randn({n})};
}

TEST(LinearInt8, MatchesExactIntegerArithmeticOnOddShapes) {
  at::manual_seed(7);
  for (const auto& [m, k, n] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 8, 4},
           {3, 13, 7},
           {17, 40, 33},
           {130, 64, 96},
           {257, 31, 5},
           // One input feature, where [N, 1]'s transpose has ambiguous strides; one output.
           {1, 1, 1},
           {5, 1, 7},
           {40, 1, 300},
           {3, 9, 1}}) {
    const Layer l = RandomLayer(n, k);
    const at::Tensor x = at::randn({m, k}) * 3;
    const at::Tensor got = LinearInt8(x, l.weight, l.scale, l.bias, kActivationNone);
    EXPECT_TRUE(at::equal(got, Exact(x, l.weight, l.scale, l.bias))) << m << "x" << k << "x" << n;
  }
}

TEST(LinearInt8, ARowGivesTheSameBitsAloneAsInABatchOfAnyBlockCount) {
  at::manual_seed(8);
  const Layer l = RandomLayer(48, 32);
  const at::Tensor x = at::randn({300, 32}) * at::logspace(-3, 3, 300).unsqueeze(1);
  const at::Tensor all = LinearInt8(x, l.weight, l.scale, l.bias, kActivationGelu);
  for (int64_t i : {0, 127, 128, 255, 299}) {
    EXPECT_TRUE(
        at::equal(LinearInt8(x.narrow(0, i, 1), l.weight, l.scale, l.bias, kActivationGelu), all.narrow(0, i, 1)))
        << "row " << i;
  }
}

TEST(LinearInt8, EmptyBatchesViewsHalfInputsAndNoBias) {
  at::manual_seed(9);
  const Layer l = RandomLayer(12, 20);
  EXPECT_EQ(LinearInt8(at::empty({0, 20}), l.weight, l.scale, l.bias, kActivationGelu).sizes(),
            at::IntArrayRef({0, 12}));
  EXPECT_EQ(LinearInt8(at::empty({2, 0, 20}), l.weight, l.scale, l.bias, 0).sizes(), at::IntArrayRef({2, 0, 12}));
  // A transposed view: read as its values, not its storage.
  const at::Tensor wide = at::randn({20, 6});
  const at::Tensor view = wide.t();
  EXPECT_TRUE(at::equal(LinearInt8(view, l.weight, l.scale, l.bias, 0),
                        LinearInt8(view.contiguous(), l.weight, l.scale, l.bias, 0)));
  // Three dimensions keep their leading shape.
  const at::Tensor x3 = at::randn({2, 5, 20});
  EXPECT_TRUE(at::equal(LinearInt8(x3, l.weight, l.scale, l.bias, 0), Exact(x3, l.weight, l.scale, l.bias)));
  // Half in, half out: the layer keeps the graph's dtype.
  const at::Tensor half = LinearInt8(x3.to(at::kHalf), l.weight, l.scale, l.bias, 0);
  EXPECT_EQ(half.scalar_type(), at::kHalf);
  // No bias is a bias of zeros.
  EXPECT_TRUE(at::equal(LinearInt8(x3, l.weight, l.scale, c10::nullopt, 0),
                        LinearInt8(x3, l.weight, l.scale, at::zeros({12}), 0)));
  // An all-zero row, or one so small that its scale would not be a normal float: scale 1,
  // quantized to zeros, output the bias (not 1 / 0 times zero).
  EXPECT_TRUE(at::equal(LinearInt8(at::zeros({1, 20}), l.weight, l.scale, l.bias, 0)[0], l.bias));
  EXPECT_TRUE(at::equal(LinearInt8(at::full({1, 20}, 1e-40), l.weight, l.scale, l.bias, 0)[0], l.bias));
  EXPECT_TRUE(at::equal(LinearInt8(at::full({1, 20}, -1e-37), l.weight, l.scale, l.bias, 0)[0], l.bias));
}

TEST(LinearInt8, GeluIsErfGeluWithinFloatRounding) {
  // Weights 64 times the identity, channel scales 1/64: the layer returns its input on the
  // int8 grid, so the fused GELU can be set beside ATen's erf GELU of the same values.
  const at::Tensor w = at::eye(64, at::kChar) * 64;
  const at::Tensor ws = at::full({64}, 1.0 / 64);
  const at::Tensor x = at::linspace(-8, 8, 64).unsqueeze(0);
  const at::Tensor plain = LinearInt8(x, w, ws, c10::nullopt, kActivationNone);
  const at::Tensor gelu = LinearInt8(x, w, ws, c10::nullopt, kActivationGelu);
  EXPECT_LT((gelu - at::gelu(plain)).abs().max().item<float>(), 2e-6);
}

TEST(LinearInt8, RefusesInconsistentCallsWithAnError) {
  const Layer l = RandomLayer(6, 8);
  const at::Tensor x = at::randn({2, 8});
  EXPECT_THROW(LinearInt8(at::randn({2, 9}), l.weight, l.scale, l.bias, 0), c10::Error);
  EXPECT_THROW(LinearInt8(x, l.weight.to(at::kFloat), l.scale, l.bias, 0), c10::Error);
  EXPECT_THROW(LinearInt8(x, l.weight, at::rand({5}), l.bias, 0), c10::Error);
  EXPECT_THROW(LinearInt8(x, l.weight, l.scale, at::randn({3}), 0), c10::Error);
  EXPECT_THROW(LinearInt8(x, l.weight, l.scale, l.bias, 2), c10::Error);
  EXPECT_THROW(LinearInt8(at::randint(0, 5, {2, 8}, at::kLong), l.weight, l.scale, l.bias, 0), c10::Error);
  EXPECT_THROW(LinearInt8(at::scalar_tensor(1.0), l.weight, l.scale, l.bias, 0), c10::Error);
  EXPECT_THROW(LinearInt8(at::randn({2, 0}), at::empty({6, 0}, at::kChar), l.scale, l.bias, 0), c10::Error);
  // Past 264,208 features, 127 x 64 products could overflow the int32 sums: refused, not wrapped.
  const int64_t deepest = std::numeric_limits<int32_t>::max() / (127 * 64);
  const at::Tensor top = at::full({1, deepest}, 64, at::kChar), one = at::ones({1}), zero = at::zeros({1});
  const at::Tensor sum = LinearInt8(at::ones({1, deepest}), top, one, zero, 0);
  EXPECT_NEAR(sum.item<float>(), 64.0 * deepest, 64.0 * deepest * 1e-6);
  EXPECT_THROW(LinearInt8(at::ones({1, deepest + 1}), at::full({1, deepest + 1}, 64, at::kChar), one, zero, 0),
               c10::Error);
}

TEST(LinearInt8, ChecksTheRangeOfEveryWeightNoVettedTableHolds) {
  // Out of [-64, 64], oneDNN's sums on CPUs without VNNI would be silently wrong: a weight the
  // running model's load did not vet (an attribute read live, a direct call's) is checked.
  const Layer l = RandomLayer(6, 8);
  const at::Tensor x = at::randn({2, 8});
  at::Tensor w = l.weight.clone();
  w[0][0] = 64;
  w[1][1] = -64;
  EXPECT_TRUE(at::equal(LinearInt8(x, w, l.scale, l.bias, 0), Exact(x, w, l.scale, l.bias)));
  for (const int value : {65, -65, 127, -128}) {
    w[3][5] = value;
    try {
      LinearInt8(x, w, l.scale, l.bias, 0);
      ADD_FAILURE() << value << " was not refused";
    } catch (const c10::Error& e) {
      EXPECT_NE(std::string(e.what()).find("holds int8 values up to " + std::to_string(std::abs(value)) +
                                           " in magnitude at this call; the operator takes [-64, 64]"),
                std::string::npos)
          << e.what();
    }
  }
  // Also through a strided view (the check reads the values, not the memory's first bytes).
  EXPECT_THROW(LinearInt8(x, w.t().contiguous().t(), l.scale, l.bias, 0), c10::Error);
  // A weight the active table holds was checked at load: trusted, not read again.
  Int8WeightTable table;
  table.Add(w, Int8WeightTable::Packing::kNone);
  const Int8GemmScope scope(&table);
  EXPECT_NO_THROW(LinearInt8(x, w, l.scale, l.bias, 0));
  EXPECT_THROW(LinearInt8(x, w.clone(), l.scale, l.bias, 0), c10::Error);  // another tensor: checked
}

TEST(LinearInt8, MultipliesTheBytesItCheckedWhileAnotherThreadWritesTheWeight) {
  // A torch.jit.fork task may write a live weight while the operator runs (an outside attack
  // did, 127 then back to 1 around each call): what the GEMM multiplies must be what was
  // checked, so every call gives the exact result for the 1s or fails, never oneDNN's saturated
  // sums of 127s that the check did not see.
  at::Tensor w = at::ones({64, 256}, at::kChar);
  const at::Tensor scale = at::full({64}, 1e-3), bias = at::zeros({64});
  const at::Tensor x = at::ones({4096, 256});
  const at::Tensor ones = Exact(x, w, scale, bias);
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    volatile int8_t* p = w.data_ptr<int8_t>();
    while (!stop.load(std::memory_order_relaxed)) {
      for (const int8_t value : {int8_t{127}, int8_t{1}}) {
        for (int64_t i = 0; i < 64 * 256; ++i) p[i] = value;
      }
      // Mostly 1s, so a check usually passes; 127s often enough that a GEMM meets some.
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
      while (std::chrono::steady_clock::now() < until) {
      }
    }
  });
  int exact = 0, refused = 0, wrong = 0;
  for (int i = 0; i < 200; ++i) {
    try {
      (at::equal(LinearInt8(x, w, scale, bias, 0), ones) ? exact : wrong)++;
    } catch (const c10::Error&) {
      ++refused;
    }
  }
  stop = true;
  writer.join();
  EXPECT_EQ(wrong, 0) << exact << " exact, " << refused << " refused";
}

TEST(LinearInt8, ANonFiniteRowGivesANanRowAndLeavesTheOthers) {
  const Layer l = RandomLayer(6, 8);
  at::Tensor x = at::randn({3, 8});
  const at::Tensor clean = LinearInt8(x, l.weight, l.scale, l.bias, kActivationGelu);
  x[0][3] = std::numeric_limits<float>::quiet_NaN();
  x[2][7] = -std::numeric_limits<float>::infinity();
  const at::Tensor got = LinearInt8(x, l.weight, l.scale, l.bias, kActivationGelu);
  EXPECT_TRUE(got[0].isnan().all().item<bool>());
  EXPECT_TRUE(got[2].isnan().all().item<bool>());
  EXPECT_TRUE(at::equal(got[1], clean[1]));
}

TEST(LinearInt8, ReadsABroadcastWeightAsItsValues) {
  // A [1, K] row expanded to [N, K] has stride 0, which oneDNN's leading dimension cannot say.
  const Layer l = RandomLayer(1, 64);
  const at::Tensor wide = l.weight.expand({50, 64});
  const at::Tensor scale = at::rand({50}), bias = at::randn({50});
  const at::Tensor x = at::randn({3, 64});
  EXPECT_TRUE(at::equal(LinearInt8(x, wide, scale, bias, 0), Exact(x, wide.contiguous(), scale, bias)));
}

TEST(LinearInt8, IsRegisteredForTorchScript) {
  const auto op = c10::Dispatcher::singleton().findSchema({"bertgate::linear_int8", ""});
  ASSERT_TRUE(op.has_value());
  const Layer l = RandomLayer(4, 8);
  const at::Tensor x = at::randn({2, 8});
  const at::Tensor got = op->typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                              const c10::optional<at::Tensor>&, int64_t)>()
                             .call(x, l.weight, l.scale, l.bias, 0);
  EXPECT_TRUE(at::equal(got, Exact(x, l.weight, l.scale, l.bias)));
}

}  // namespace
}  // namespace bertgate
