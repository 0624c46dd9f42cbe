#pragma once
// The whole contract between the Node addon and the engine library.
//
// Free of torch and of N-API on purpose: the addon compiles against this header alone and
// reaches the engine through one C entry point, after the TypeScript side has located and
// preloaded libtorch. That keeps the addon loadable (and `doctor` able to explain) on a
// machine where libtorch is missing, and lets another model loader (AOTInductor `.pt2`)
// sit beside the TorchScript one without the addon noticing.
//
// Nothing here throws across the library boundary: every call returns an Outcome.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace bertgate {

enum class ErrorCode : int {
  kModelLoad,          // the model file is missing, corrupt or not a usable TorchScript module
  kModelOutput,        // the model ran but its output is not classification logits
  kDeviceUnavailable,  // the requested device does not exist in this process
  kOutOfMemory,        // the allocator of the model's device ran out
  kInference,          // the forward pass failed for another reason
  kInternal,           // a bug: an exception nobody expected
  kRuntimeConflict,    // the load asks for a process-wide setting other than the one in force
};

// Which integer GEMM a load's bertgate::linear_int8 layers run: the fastest here (the engine's
// AMX kernel where the CPU has AMX, else fbgemm's, else oneDNN's), AMX or fbgemm or a failed load
// (kDeviceUnavailable), or oneDNN's everywhere. A model that reads a weight afresh on every call
// runs on oneDNN whatever is asked, or fails the load where AMX or fbgemm was insisted on.
enum class Int8Gemm : int { kFastest, kAmx, kOnednn, kFbgemm };

// The codes cross into JavaScript as these strings; lib/errors.ts maps each to a class.
inline const char* ErrorCodeName(ErrorCode code) {
  switch (code) {
    case ErrorCode::kModelLoad:
      return "ERR_MODEL_LOAD";
    case ErrorCode::kModelOutput:
      return "ERR_MODEL_OUTPUT";
    case ErrorCode::kDeviceUnavailable:
      return "ERR_DEVICE_UNAVAILABLE";
    case ErrorCode::kOutOfMemory:
      return "ERR_OUT_OF_MEMORY";
    case ErrorCode::kInference:
      return "ERR_INFERENCE";
    case ErrorCode::kInternal:
      return "ERR_INTERNAL";
    case ErrorCode::kRuntimeConflict:
      return "ERR_LIBTORCH_CONFLICT";
  }
  return "ERR_INTERNAL";
}

struct Failure {
  ErrorCode code;
  std::string message;
};

template <class T>
class Outcome {
 public:
  Outcome(T value) : state_(std::move(value)) {}            // NOLINT: implicit by design
  Outcome(Failure failure) : state_(std::move(failure)) {}  // NOLINT
  bool ok() const { return state_.index() == 0; }
  T& value() { return std::get<0>(state_); }
  const Failure& failure() const { return std::get<1>(state_); }

 private:
  std::variant<T, Failure> state_;
};

enum class DeviceKind { kCpu, kCuda };
enum class DType { kFloat32, kFloat16, kBFloat16 };

struct LoadOptions {
  std::string model_path;
  DeviceKind device = DeviceKind::kCpu;
  int device_index = 0;
  DType dtype = DType::kFloat32;
  // Intra-op threads of the calling thread; the addon loads and infers on one worker
  // thread, so this is the engine's thread count.
  int threads = 1;
  bool freeze = true;
  // CUDA only: the share of the device's memory libtorch's caching allocator may hold, in
  // (0, 1]; 0 leaves it unlimited. Per device and process-wide (the allocator is shared).
  double cuda_memory_fraction = 0;
  // libtorch's warnings raised in this engine's calls are printed to stderr as well as
  // collected (torch_warnings.h). Per load: the caller reads its own environment.
  bool torch_warnings_to_stderr = false;
  // int8 bundles quantize activations to 7 bits even where the CPU has AVX-512 VNNI (the same
  // rounding on every host of a fleet of mixed CPUs); else 8 where the CPU allows.
  bool int8_seven_bits = false;
  // The GEMM of bertgate::linear_int8 layers (amx_int8_gemm.h, fbgemm_int8_gemm.h), the same
  // bits whichever runs.
  Int8Gemm int8_gemm = Int8Gemm::kFastest;
  // libtorch's CPU allocator for the process is bertgate's caching one (cpu_allocator.h); false:
  // libtorch's own. Process-wide: the first load chooses, a later load asking otherwise fails.
  bool cpu_cache = true;
  // A forward pass at [warmup_rows, warmup_seq_len] after the load probe, so the executor's
  // profiling and the fuser's compilation happen at load, at a shape like the traffic's,
  // rather than on a user's request. 0 rows: none (the probe alone).
  int64_t warmup_rows = 0;
  int64_t warmup_seq_len = 0;
  // The out-of-distribution gate calibrate fitted (ood_gate.h): a projection [gate_dim, width]
  // and the class centres in its space [classes, gate_dim], row-major; gate_dim 0: no gate.
  int64_t gate_dim = 0;
  std::vector<float> gate_projection;
  std::vector<float> gate_centres;
};

struct ModelInfo {
  std::string loader;        // "torchscript"
  std::string device;        // "cpu", "cuda:0"
  std::string dtype;         // weights: "float32" | "float16" | "bfloat16"
  std::string output_kind;   // "tensor" | "tuple" | "dict": where the logits were found
  std::string logits_dtype;  // dtype of the logits the model returns
  int64_t num_labels = 0;    // output width, probed with a forward pass at load
  bool frozen = false;
  bool quantized = false;        // the graph runs int8 Linear layers
  int int8_activation_bits = 0;  // quantized: what its Linear layers quantize activations to, 8 or 7
  // quantized: the operator of its int8 layers, "bertgate::linear_int8" or (bundles exported
  // before it) "quantized::linear_dynamic"; the bundle's record must name the same family.
  std::string int8_op;
  // quantized with bertgate::linear_int8: the GEMM its layers run here, "amx" (the engine's own,
  // on CPUs with AMX), "fbgemm" (weights packed once, x86-64 CPUs with AVX2) or "onednn"; the
  // same bits whichever, only the speed differs. "" otherwise.
  std::string int8_gemm;
  int64_t feature_width = 0;  // width of the pooled features the model returns beside its logits; 0: none
  // Embedding table sizes read from the module's parameters (-1 when not found), so the
  // bundle's config and tokenizer can be checked against the weights actually shipped.
  int64_t vocab_rows = -1;
  int64_t position_rows = -1;
  int64_t type_vocab_rows = -1;
  // libtorch's warnings while this model loaded, probe and warm-up included (an int8 bundle's
  // deprecation notice on libtorch >= 2.13): collected, not printed (torch_warnings.h).
  std::vector<std::string> torch_warnings;
};

// libtorch's CPU allocator in this process (cpu_allocator.h): large buffers (128 KiB and up)
// are kept for reuse, up to a bound. Process-wide: every engine and replica shares it.
struct CpuCacheStats {
  bool installed = false;         // false where BERTGATE_CPU_ALLOCATOR=system kept libtorch's own
  int64_t live_bytes = 0;         // large buffers in use now
  int64_t peak_live_bytes = 0;    // the most ever in use at once
  int64_t cached_bytes = 0;       // large buffers freed and kept for reuse
  int64_t cache_limit_bytes = 0;  // what cached_bytes is held to: max(128 MiB, 2 * peak_live_bytes)
  int64_t reused = 0;             // large requests served from the cache
  int64_t mapped = 0;             // large requests that mapped fresh memory
  int64_t unmapped = 0;           // cached buffers handed back to the kernel to keep the bound
};

// Token ids arrive as int32 (every BERT vocabulary fits); the engine widens them to the
// int64 the model wants. Ids, mask and type ids travel in one buffer, so a batch costs one
// copy to the device (through pinned memory) and one widening cast, not three of each.
struct InferInput {
  std::vector<int32_t> tokens;  // [3, rows, seq_len], row-major: ids, then mask (0/1), then type ids
  int64_t rows = 0;
  int64_t seq_len = 0;
  float temperature = 1.0f;
  int top_k = 1;
  bool want_logits = false;     // raw fp32 logits [rows * cols]
  bool want_log_probs = false;  // temperature-scaled log-probabilities [rows * cols]
  bool want_features = false;   // the pooled features [rows * feature_width], fp32
};

// Compact per-row results of the fused log-softmax (see fused_log_softmax.h).
struct InferOutput {
  int64_t rows = 0;
  int64_t cols = 0;
  int64_t top_k = 0;
  std::vector<int32_t> top_index;  // [rows * top_k], best first; -1 in invalid rows
  std::vector<float> top_log_prob;
  std::vector<float> margin;
  std::vector<float> entropy;
  std::vector<float> energy;
  std::vector<uint8_t> valid;  // 0 where the logits held NaN or +-inf
  std::vector<float> logits;
  std::vector<float> log_probs;
  std::vector<float> features;   // when asked: [rows * feature_width]
  std::vector<float> ood_score;  // with a gate: [rows], the gate's score (higher: further from calibration)
  double forward_ms = 0;         // the whole engine call: transfers, forward, scores
  CpuCacheStats cpu_cache;       // the process's CPU allocator once this batch's tensors were freed
};

// What the engine library was compiled as: the addon checks it against engines.json, the
// manifest that chose the file, so a renamed or mislabelled engine is refused.
struct EngineBuild {
  std::string torch_version;  // the headers the engine was compiled against: "2.11.0"
  bool cuda_kernels = false;  // the CUDA flavour (fused kernel, device path), or CPU only
};

struct RuntimeInfo {
  std::string torch_version;  // the headers the engine was compiled against
  bool cxx11_abi = true;
  bool cuda_available = false;
  int cuda_device_count = 0;
  int intra_op_threads = 0;  // of the calling thread
  int interop_threads = 0;
  std::string parallel_info;
  // Every distinct libtorch warning the engine's calls raised in this process so far.
  std::vector<std::string> torch_warnings;
  CpuCacheStats cpu_cache;
};

// A batch handed to the device and not yet waited for: what Engine::Enqueue returns and
// Engine::Complete takes. Opaque to the caller.
class PendingBatch {
 public:
  virtual ~PendingBatch() = default;
  // True when the results are already on the host (a CPU model): Complete returns at once, so
  // a caller need not hand the batch to another thread to wait.
  virtual bool done() const noexcept = 0;
};

class Engine {
 public:
  virtual ~Engine() = default;
  virtual const ModelInfo& info() const = 0;
  // Queues a batch on the model's device and stream: copy in, forward pass, fused scores, and
  // the copy of the compact results to the host. On a CPU all of it has run on return; on a
  // GPU it returns once the work is queued, so the next batch can be queued while this one
  // runs. Called on the thread that loaded the engine.
  virtual Outcome<std::unique_ptr<PendingBatch>> Enqueue(const InferInput& input) noexcept = 0;
  // Waits for a batch Enqueue returned and hands its results over. Callable from any one
  // thread, in the order the batches were queued; it never touches the model.
  virtual Outcome<std::shared_ptr<InferOutput>> Complete(std::unique_ptr<PendingBatch> pending) noexcept = 0;

  // Another engine on this one's loaded weights and gate, to be run by the calling thread with
  // `threads` intra-op threads: how CPU replicas share one copy of a model. The model is only
  // read by a forward pass, so the two may run at once; the weights live while either does.
  // Callable from any thread while this engine lives.
  virtual Outcome<std::unique_ptr<Engine>> Replica(int threads) noexcept = 0;

  // Both, one after the other: for callers that have nothing to overlap.
  Outcome<std::shared_ptr<InferOutput>> Infer(const InferInput& input) noexcept {
    auto pending = Enqueue(input);
    if (!pending.ok()) return pending.failure();
    return Complete(std::move(pending.value()));
  }
};

class EngineLibrary {
 public:
  virtual ~EngineLibrary() = default;
  virtual Outcome<std::unique_ptr<Engine>> Load(const LoadOptions& options) noexcept = 0;
  virtual RuntimeInfo Runtime() noexcept = 0;
  virtual EngineBuild Build() const noexcept = 0;
};

}  // namespace bertgate

// The one symbol the addon looks up. Versioned so that an addon and an engine library from
// different builds refuse each other instead of misreading these structs.
#define BERTGATE_ENGINE_ENTRY "bertgate_engine_library_v10"
extern "C" bertgate::EngineLibrary* bertgate_engine_library_v10();
