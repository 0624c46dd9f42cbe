// libbertgate_mkl_any_cpu.so: loaded only when BERTGATE_MKL_ANY_CPU=1, into the global symbol
// scope and before libtorch, so that libtorch's own call to MKL's vendor check binds here.
//
// The pip torch does its fp32 matmuls in MKL, statically linked into libtorch_cpu.so. MKL asks
// mkl_serv_intel_cpu_true() whether the CPU is Intel's and, where it is not (an AMD EPYC), takes
// code paths that ignore the CPU's AVX2 and AVX-512: one [128, 384] x [384, 1536] matmul ran
// 2.15x slower than with this answer, and the default model 1.7-1.9x (docs/benchmarks.md). Which
// kernels MKL then picks still follows the CPU's feature bits (cpuid), so only instructions the
// CPU has are used. libtorch exports the symbol and calls it through its PLT, which is what
// lets a definition found earlier in the lookup order answer instead.
//
// No libtorch and no C++ runtime here: the file is the same for every torch of the matrix.

#include <atomic>

namespace {
std::atomic<long> calls{0};
}  // namespace

extern "C" {

// MKL's question: is this an Intel CPU? Answered yes, and counted, so a test can tell that
// libtorch's MKL really asked here and not its own copy.
__attribute__((visibility("default"))) int mkl_serv_intel_cpu_true() {
  calls.fetch_add(1, std::memory_order_relaxed);
  return 1;
}

// How many times MKL asked since the process loaded this file.
__attribute__((visibility("default"))) long bertgate_mkl_any_cpu_calls() {
  return calls.load(std::memory_order_relaxed);
}

}  // extern "C"
