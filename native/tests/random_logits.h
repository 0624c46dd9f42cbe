#pragma once
// Shared by the CPU and CUDA kernel tests: a seed fresh each run (printed on failure, so a
// failing case can be replayed) and random logits with the hard cases mixed in.

#include <ATen/ATen.h>

#include <chrono>
#include <cstdint>

namespace bertgate {

inline uint64_t Seed() {
  static const uint64_t seed = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return seed;
}

// +-1e4 entries, rows that are all negative and large (where max-by-magnitude would
// overflow), and exact ties at the top.
inline at::Tensor RandomLogits(int64_t rows, int64_t cols, at::Generator& gen) {
  at::Tensor z = at::randn({rows, cols}, gen, at::kDouble) * 4.0;
  for (int64_t r = 0; r < rows; ++r) {
    switch (r % 5) {
      case 1:
        z[r][r % cols] = 1e4;
        break;
      case 2:
        z[r][(r * 7) % cols] = -1e4;
        break;
      case 3:
        z[r] = z[r] - 1e4;
        break;
      case 4:
        z[r][0] = 50.0;
        z[r][cols - 1] = 50.0;
        break;
      default:
        break;
    }
  }
  return z;
}

}  // namespace bertgate
