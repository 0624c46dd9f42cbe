#include "amx_int8_gemm.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

// AMX needs GCC 11 or Clang 12 (their tile intrinsics), x86-64 and Linux (the kernel must grant
// the tile state to the process). Elsewhere AmxInt8Available() is false and the operator keeps
// oneDNN's GEMM.
#if defined(__x86_64__) && defined(__linux__) && \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define BERTGATE_AMX 1
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>
#else
#define BERTGATE_AMX 0
#endif

namespace bertgate {
namespace {

// One tile of B: 16 rows of 64 bytes, each row 16 output columns x 4 consecutive K values.
constexpr int64_t kTileBytes = 1024;

#if BERTGATE_AMX
// The kernel refuses the tile state to a process that has not asked for it (first use traps).
constexpr long kArchReqXcompPerm = 0x1023;
constexpr long kXfeatureXtiledata = 18;

bool DetectAmx() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool tile = (edx >> 24) & 1u, int8 = (edx >> 25) & 1u;
  if (!tile || !int8) return false;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

// The layout of _tile_loadconfig's operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette_id;
  uint8_t start_row;
  uint8_t reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// Output columns [n_begin, n_end) (multiples of 32) for every row, in blocks of 32 x 32: four
// accumulator tiles (0-3) over two tiles of A (4, 5) and two of B (6, 7), so each tile loaded
// feeds two multiplies. Tile numbers are immediates, hence the spelled-out calls.
__attribute__((target("amx-tile,amx-int8"))) void Kernel(const int8_t* a, int64_t rows_padded, int64_t lda,
                                                         const AmxPackedWeight& w, int64_t n_begin, int64_t n_end,
                                                         int32_t* c, int64_t ldc) {
  TileConfig cfg{};
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  _tile_loadconfig(&cfg);
  const int64_t depth_tiles = w.k_padded / kAmxDepthPad;
  const int64_t c_stride = ldc * static_cast<int64_t>(sizeof(int32_t));
  for (int64_t n0 = n_begin; n0 < n_end; n0 += 32) {
    const int8_t* b0 = w.data.get() + (n0 / 16) * depth_tiles * kTileBytes;
    const int8_t* b1 = b0 + depth_tiles * kTileBytes;
    for (int64_t m0 = 0; m0 < rows_padded; m0 += 32) {
      const int8_t* a0 = a + m0 * lda;
      const int8_t* a1 = a0 + 16 * lda;
      _tile_zero(0);
      _tile_zero(1);
      _tile_zero(2);
      _tile_zero(3);
      for (int64_t d = 0; d < depth_tiles; ++d) {
        _tile_loadd(4, a0 + d * kAmxDepthPad, lda);
        _tile_loadd(5, a1 + d * kAmxDepthPad, lda);
        _tile_loadd(6, b0 + d * kTileBytes, 64);
        _tile_loadd(7, b1 + d * kTileBytes, 64);
        _tile_dpbssd(0, 4, 6);
        _tile_dpbssd(1, 4, 7);
        _tile_dpbssd(2, 5, 6);
        _tile_dpbssd(3, 5, 7);
      }
      int32_t* c0 = c + m0 * ldc + n0;
      _tile_stored(0, c0, c_stride);
      _tile_stored(1, c0 + 16, c_stride);
      _tile_stored(2, c0 + 16 * ldc, c_stride);
      _tile_stored(3, c0 + 16 * ldc + 16, c_stride);
    }
  }
  _tile_release();
}
#endif

thread_local const Int8WeightTable* active_table = nullptr;

// Inference tensors keep no version counter.
int64_t VersionOf(const at::Tensor& t) {
  return t.is_inference() ? -1 : static_cast<int64_t>(t._version());
}

}  // namespace

bool AmxInt8Available() {
#if BERTGATE_AMX
  static const bool available = DetectAmx();
  return available;
#else
  return false;
#endif
}

std::unique_ptr<AmxPackedWeight> PackForAmx(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kChar, "bertgate: AMX packs 2-D int8 weights");
  const at::Tensor w = weight.contiguous();
  auto packed = std::make_unique<AmxPackedWeight>();
  packed->n = w.size(0);
  packed->k = w.size(1);
  packed->n_padded = RoundUp(packed->n, kAmxColPad);
  packed->k_padded = RoundUp(packed->k, kAmxDepthPad);
  const int64_t depth_tiles = packed->k_padded / kAmxDepthPad;
  packed->data.reset(new int8_t[packed->n_padded * packed->k_padded]());
  const int8_t* src = w.data_ptr<int8_t>();
  // Tile (column block nt, depth block d), row r, column c, lane t holds w[nt*16 + c, d*64 + 4r + t].
  for (int64_t j = 0; j < packed->n; ++j) {
    const int8_t* row = src + j * packed->k;
    int8_t* col = packed->data.get() + (j / 16) * depth_tiles * kTileBytes + (j % 16) * 4;
    for (int64_t kk = 0; kk < packed->k; ++kk) {
      col[(kk / kAmxDepthPad) * kTileBytes + ((kk % kAmxDepthPad) / 4) * 64 + kk % 4] = row[kk];
    }
  }
  return packed;
}

void Int8WeightTable::Add(const at::Tensor& weight, Packing packing) {
  if (entries_.count(weight.data_ptr()) != 0) return;  // the same bytes: one entry (the first geometry)
  entries_.emplace(
      weight.data_ptr(),
      Entry{weight, VersionOf(weight), packing == Packing::kAmx ? PackForAmx(weight) : nullptr,
            packing == Packing::kFbgemm && FbgemmCanPack(weight) ? PackForFbgemm(weight) : FbgemmPacked()});
}

const Int8WeightTable::Entry* Int8WeightTable::Find(const at::Tensor& weight) const {
  const auto it = entries_.find(weight.data_ptr());
  if (it == entries_.end()) return nullptr;
  // The held source keeps its memory from being handed to another tensor, so the same address
  // is the same bytes; they must be read in the same geometry. The version is a second look only:
  // .data writes, and views that a save and load separated, do not bump it; what keeps a model's
  // weights unwritten is that its graph alone holds them (IsolateInt8Weights).
  const at::Tensor& source = it->second.source;
  const bool same = source.sizes() == weight.sizes() && source.strides() == weight.strides() &&
                    VersionOf(source) == it->second.version;
  return same ? &it->second : nullptr;
}

const Int8WeightTable* ActiveInt8WeightTable() {
  return active_table;
}

Int8GemmScope::Int8GemmScope(const Int8WeightTable* table) : previous_(active_table) {
  active_table = table;
}

Int8GemmScope::~Int8GemmScope() {
  active_table = previous_;
}

void AmxInt8Gemm(const int8_t* a, int64_t rows_padded, int64_t lda, const AmxPackedWeight& w, int32_t* c, int64_t ldc) {
#if BERTGATE_AMX
  TORCH_CHECK(AmxInt8Available(), "bertgate: AMX int8 GEMM called where AMX is unavailable");
  // Column blocks across the intra-op threads: each writes its own columns of c.
  at::parallel_for(0, w.n_padded / 32, 4,
                   [&](int64_t begin, int64_t end) { Kernel(a, rows_padded, lda, w, begin * 32, end * 32, c, ldc); });
#else
  (void)a, (void)rows_padded, (void)lda, (void)w, (void)c, (void)ldc;
  TORCH_CHECK(false, "bertgate: this engine was built without AMX");
#endif
}

}  // namespace bertgate
