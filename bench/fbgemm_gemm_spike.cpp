// Spike behind fbgemm_int8_gemm.h (docs/benchmarks.md, "fbgemm's GEMM for the int8 Linear"): the
// GEMM bertgate::linear_int8 called on CPUs without AMX (oneDNN's gemm_s8s8s32, which packs the
// weights and sums their columns again on every call) against fbgemm's on weights packed once,
// activations shifted to u8 and the shift taken off by the columns' sums, on the default model's
// shapes (hidden 384, FFN 1536, QKV as one 1152-column GEMM) at 30, 80 and 128 rows. One thread,
// 15 rounds of 50 calls each way, interleaved, median microseconds a call; each result compared
// with oneDNN's (exact sums: the same bits).
//
//   T=.venv/lib/python3.11/site-packages/torch
//   g++ -std=c++17 -O3 -march=native -I$T/include -o /tmp/fbgemm_spike bench/fbgemm_gemm_spike.cpp
//     -L$T/lib -ltorch_cpu -lc10 -Wl,-rpath,$PWD/$T/lib   (one line)
//   /tmp/fbgemm_spike

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <fbgemm/Fbgemm.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

namespace at::native {
TORCH_API void mkldnn_matmul_i8i8i32(const at::Tensor& mat1, const at::Tensor& mat2, const at::Tensor& result);
}

int main() {
  using Clock = std::chrono::steady_clock;
  at::set_num_threads(1);
  const int shapes[][3] = {{30, 384, 1152}, {30, 384, 384},  {30, 384, 1536},  {30, 1536, 384}, {80, 384, 1152},
                           {80, 384, 1536}, {80, 1536, 384}, {128, 384, 1536}, {128, 1536, 384}};
  for (const auto& s : shapes) {
    const int m = s[0], k = s[1], n = s[2];
    const at::Tensor a = at::randint(-127, 128, {m, k}, at::kChar), w = at::randint(-64, 65, {n, k}, at::kChar);
    at::Tensor onednn_out = at::empty({m, n}, at::kInt), fbgemm_out = at::empty({m, n}, at::kInt);
    const int8_t* wp = w.data_ptr<int8_t>();
    fbgemm::PackBMatrix<int8_t> packed(fbgemm::matrix_op_t::Transpose, k, n, wp, k, nullptr, 1);
    std::vector<int32_t> shift(n);
    for (int j = 0; j < n; ++j) {
      int32_t sum = 0;
      for (int c = 0; c < k; ++c) sum += wp[j * k + c];
      shift[j] = 128 * sum;
    }
    std::vector<uint8_t> u(static_cast<size_t>(m) * k);
    auto run_fbgemm = [&]() {
      const int8_t* q = a.data_ptr<int8_t>();
      for (size_t i = 0; i < u.size(); ++i) u[i] = static_cast<uint8_t>(q[i] ^ 0x80);
      fbgemm::PackAMatrix<uint8_t> pack_a(fbgemm::matrix_op_t::NoTranspose, m, k, u.data(), k, nullptr, 1);
      fbgemm::DoNothing<int32_t, int32_t> nothing;
      fbgemm::memCopy<> copy(nothing);
      int32_t* c = fbgemm_out.data_ptr<int32_t>();
      fbgemm::fbgemmPacked(pack_a, packed, c, c, n, copy, 0, 1);
      for (int i = 0; i < m; ++i)
        for (int j = 0; j < n; ++j) c[i * n + j] -= shift[j];
    };
    auto run_onednn = [&]() { at::native::mkldnn_matmul_i8i8i32(a, w.t(), onednn_out); };
    run_fbgemm();
    run_onednn();
    const bool same = at::equal(onednn_out, fbgemm_out);
    std::vector<double> t_onednn, t_fbgemm;
    for (int r = 0; r < 15; ++r) {
      const auto t0 = Clock::now();
      for (int i = 0; i < 50; ++i) run_onednn();
      const auto t1 = Clock::now();
      for (int i = 0; i < 50; ++i) run_fbgemm();
      const auto t2 = Clock::now();
      t_onednn.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count() / 50);
      t_fbgemm.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count() / 50);
    }
    std::sort(t_onednn.begin(), t_onednn.end());
    std::sort(t_fbgemm.begin(), t_fbgemm.end());
    std::printf("%4d x %4d x %4d  oneDNN %7.1f us  fbgemm packed once %7.1f us  %.2fx  same bits %s\n", m, k, n,
                t_onednn[7], t_fbgemm[7], t_onednn[7] / t_fbgemm[7], same ? "yes" : "NO");
  }
  return 0;
}
