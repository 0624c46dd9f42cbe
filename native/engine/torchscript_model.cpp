#include "torchscript_model.h"

#include <ATen/Context.h>
#include <ATen/core/Dict.h>
#include <ATen/cpu/Utils.h>
#include <c10/core/InferenceMode.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/ir/ir.h>
#include <torch/csrc/jit/passes/freeze_module.h>
#include <torch/cuda.h>

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "amx_int8_gemm.h"
#include "device_scope.h"
#include "engine_error.h"
#include "int8_linear.h"
#include "logits.h"
#include "torch_warnings.h"

namespace bertgate {
namespace {

c10::Device ResolveDevice(const LoadOptions& options) {
  if (options.device == DeviceKind::kCpu) return c10::Device(c10::kCPU);
  const std::string name = "cuda:" + std::to_string(options.device_index);
  if (!torch::cuda::is_available()) {
    throw EngineError(ErrorCode::kDeviceUnavailable,
                      "device '" + name + "' was requested but libtorch sees no CUDA device in this process");
  }
  const auto count = static_cast<int>(torch::cuda::device_count());
  if (options.device_index >= count) {
    throw EngineError(ErrorCode::kDeviceUnavailable, "device '" + name + "' was requested but only " +
                                                         std::to_string(count) + " CUDA device(s) exist");
  }
  return c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(options.device_index));
}

c10::ScalarType ToScalarType(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return c10::kHalf;
    case DType::kBFloat16:
      return c10::kBFloat16;
    case DType::kFloat32:
      break;
  }
  return c10::kFloat;
}

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Freezing folds parameters into constants, so the embedding sizes are read first.
void ReadEmbeddingSizes(const torch::jit::Module& module, ModelInfo& info) {
  for (const auto& p : module.named_parameters(/*recurse=*/true)) {
    if (p.value.dim() != 2) continue;
    if (EndsWith(p.name, "word_embeddings.weight")) info.vocab_rows = p.value.size(0);
    if (EndsWith(p.name, "position_embeddings.weight")) info.position_rows = p.value.size(0);
    if (EndsWith(p.name, "token_type_embeddings.weight")) info.type_vocab_rows = p.value.size(0);
  }
}

// Parameters and buffers that hold floating values go to `dtype`; integer buffers (BERT's
// position_ids) stay as they are. Bundles may store fp16 weights (half the file) and run in
// fp32 on a CPU, or fp32 weights run in fp16 on a GPU.
void CastFloatingState(torch::jit::Module& module, c10::ScalarType dtype) {
  const auto cast = [dtype](const at::Tensor& t) {
    if (t.is_floating_point() && t.scalar_type() != dtype) const_cast<at::Tensor&>(t).set_data(t.to(dtype));
  };
  for (const auto& p : module.parameters(/*recurse=*/true)) cast(p);
  for (const auto& b : module.buffers(/*recurse=*/true)) cast(b);
}

// Calls `visit` on every node of every method's graph and every TorchScript class's method,
// nested blocks, the functions they call (prim::CallFunction) and the subgraphs of torch.jit.fork
// tasks included, until it returns true; returns whether one did. A call hidden in a scripted
// function, a class's method or a forked task is still a call of the model's.
template <typename Visit>
bool AnyNode(const torch::jit::Module& module, Visit&& visit) {
  std::vector<torch::jit::Block*> blocks;
  std::unordered_set<const torch::jit::Graph*> seen;
  const auto add = [&](const std::shared_ptr<torch::jit::Graph>& graph) {
    if (graph != nullptr && seen.insert(graph.get()).second) blocks.push_back(graph->block());
  };
  for (const auto& submodule : module.modules()) {
    for (const auto& method : submodule.get_methods()) add(method.graph());
  }
  // The methods of the TorchScript classes (not modules) in the module's code, called through
  // objects or interfaces or not at all. (Module types' methods in the code may be the ones
  // freezing replaced: the modules' own are read above.)
  const std::shared_ptr<torch::jit::CompilationUnit> code = module._ivalue()->compilation_unit();
  for (torch::jit::Function* function : code->get_functions()) {
    if (function == nullptr) continue;  // removed (freezing drops methods it inlined): a hole in the list
    const c10::QualifiedName& name = function->qualname();
    const c10::ClassTypePtr owner =
        name.prefix().empty() ? nullptr : code->get_class(c10::QualifiedName(name.prefix()));
    if (owner != nullptr && !owner->is_module() && function->isGraphFunction())
      add(torch::jit::toGraphFunction(*function).graph());
  }
  while (!blocks.empty()) {
    torch::jit::Block* block = blocks.back();
    blocks.pop_back();
    for (torch::jit::Node* node : block->nodes()) {
      for (torch::jit::Block* inner : node->blocks()) blocks.push_back(inner);
      if (node->hasAttribute(c10::attr::Subgraph) && node->kindOf(c10::attr::Subgraph) == torch::jit::AttributeKind::g)
        add(node->g(c10::attr::Subgraph));
      if (node->kind() == c10::prim::CallFunction) {
        const auto type = node->input(0)->type()->cast<c10::FunctionType>();
        torch::jit::Function* callee = type != nullptr ? type->function() : nullptr;
        if (callee != nullptr && callee->isGraphFunction()) add(torch::jit::toGraphFunction(*callee).graph());
      }
      if (visit(node)) return true;
    }
  }
  return false;
}

}  // namespace

namespace {

bool UsesOpsOf(const torch::jit::Module& module, const std::string& ns) {
  return AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind().is_aten() || node->kind().is_prim()) return false;
    return node->kind().ns().toUnqualString() == ns;
  });
}

}  // namespace

bool UsesQuantizedOps(const torch::jit::Module& module) {
  return UsesLinearInt8(module) || UsesTorchAoOps(module);
}

bool UsesTorchAoOps(const torch::jit::Module& module) {
  return UsesOpsOf(module, "quantized");
}

bool UsesLinearInt8(const torch::jit::Module& module) {
  return UsesOpsOf(module, "bertgate");
}

namespace {

// Dense CPU int8 tensors, the only kind a kernel reads (a meta or sparse tensor would fail the
// operator's own checks, by name).
bool IsInt8Weight(const at::Tensor& t) {
  return t.defined() && t.scalar_type() == at::kChar && t.layout() == at::kStrided && t.device().is_cpu() &&
         t.numel() > 0;
}

const c10::Symbol& LinearInt8Op() {
  static const c10::Symbol symbol = c10::Symbol::fromQualString("bertgate::linear_int8");
  return symbol;
}

}  // namespace

namespace {

const c10::Symbol& LinearDynamic() {
  static const c10::Symbol symbol = c10::Symbol::fromQualString("quantized::linear_dynamic");
  return symbol;
}

// The call's reduce_range when it is a constant; nullopt when the graph computes it.
std::optional<bool> ReduceRangeOf(torch::jit::Node* node) {
  const std::optional<c10::IValue> value = torch::jit::toIValue(node->input(2));
  if (!value || !value->isBool()) return std::nullopt;
  return value->toBool();
}

}  // namespace

int ReduceInt8Range(torch::jit::Module& module) {
  int changed = 0;
  AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind() != LinearDynamic() || node->inputs().size() < 3 || ReduceRangeOf(node) == true) return false;
    const torch::jit::WithInsertPoint here(node);
    node->replaceInput(2, node->owningGraph()->insertConstant(true));
    ++changed;
    return false;  // every node
  });
  return changed;
}

int Int8ActivationBitsOf(const torch::jit::Module& module) {
  const bool seven = AnyNode(module, [](torch::jit::Node* node) {
    return node->kind() == LinearDynamic() && (node->inputs().size() < 3 || ReduceRangeOf(node) != false);
  });
  return seven ? 7 : 8;
}

bool FullRangeInt8Here(const LoadOptions& options) {
  return !options.int8_seven_bits && at::cpu::is_avx512_vnni_supported();
}

namespace {

std::string WeightRangeError(const std::string& path, int largest) {
  return "'" + path + "' holds int8 weights up to " + std::to_string(largest) +
         " in magnitude; bertgate::linear_int8 takes [-64, 64] (the exporter's 64 levels), the range its integer " +
         "matmul sums exactly on every CPU: re-export with --quantize int8";
}

}  // namespace

namespace {
constexpr const char* kStoredOnly =
    "the operator takes stored int8 weights that nothing else in the graph reads or writes, as --quantize int8 "
    "writes them";
}  // namespace

void CheckInt8Weights(const torch::jit::Module& module, const std::string& path) {
  const c10::Symbol& linear_int8 = LinearInt8Op();
  // Attributes that feed the operator as weights, by owner type and name: read only by it.
  std::set<std::pair<const c10::Type*, std::string>> weights;
  AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind() != linear_int8 || node->inputs().size() < 2) return false;
    torch::jit::Node* source = node->input(1)->node();
    if (source->kind() == c10::prim::GetAttr)
      weights.emplace(source->input(0)->type().get(), source->s(c10::attr::name));
    return false;
  });
  AnyNode(module, [&](torch::jit::Node* node) {
    if ((node->kind() != c10::prim::GetAttr && node->kind() != c10::prim::SetAttr) ||
        weights.count({node->input(0)->type().get(), node->s(c10::attr::name)}) == 0) {
      return false;
    }
    // Written to, or read by anything but the operator's weight slot (an in-place op, a view
    // that one could write through): what the load read is not what would run.
    const bool only_weight =
        node->kind() == c10::prim::GetAttr &&
        std::all_of(node->output()->uses().begin(), node->output()->uses().end(),
                    [](const torch::jit::Use& use) { return use.user->kind() == LinearInt8Op() && use.offset == 1; });
    if (!only_weight) {
      const bool writes = node->kind() == c10::prim::SetAttr;
      throw EngineError(ErrorCode::kModelLoad,
                        "'" + path + "' " + (writes ? "writes" : "passes") + " the int8 weight '" +
                            node->s(c10::attr::name) + "' of bertgate::linear_int8 " +
                            (writes ? "in its graph" : "to another operator") + "; " + kStoredOnly);
    }
    return false;
  });
  AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind() != linear_int8 || node->inputs().size() < 2) return false;
    torch::jit::Node* source = node->input(1)->node();
    // An attribute is read live: the operator checks its range at every call (int8_linear.h).
    if (source->kind() == c10::prim::GetAttr) return false;
    const std::optional<c10::IValue> value =
        source->kind() == c10::prim::Constant ? torch::jit::toIValue(node->input(1)) : std::nullopt;
    if (!value || !value->isTensor()) {
      if (source->kind() == c10::prim::Param) {
        throw EngineError(ErrorCode::kModelLoad, "'" + path + "' passes a weight of bertgate::linear_int8 into a " +
                                                     "function, method or forked task as an argument, which the " +
                                                     "load cannot follow to a stored tensor; the operator takes " +
                                                     "stored int8 weights, as --quantize int8 writes (freezing " +
                                                     "inlines calls of functions and methods, not forked tasks)");
      }
      throw EngineError(ErrorCode::kModelLoad, "'" + path + "' computes a weight of bertgate::linear_int8 in its " +
                                                   "graph (from " + source->kind().toQualString() + "); the " +
                                                   "operator takes stored int8 weights, as --quantize int8 writes");
    }
    // Used by anything but an operator's weight slot (a view, an in-place op, a forked task):
    // what the load read is not what would run.
    const auto& uses = node->input(1)->uses();
    if (!std::all_of(uses.begin(), uses.end(), [](const torch::jit::Use& use) {
          return use.user->kind() == LinearInt8Op() && use.offset == 1;
        })) {
      throw EngineError(ErrorCode::kModelLoad, "'" + path + "' passes an int8 weight of bertgate::linear_int8 (a " +
                                                   "constant of its graph) to another operator; " + kStoredOnly);
    }
    const at::Tensor& w = value->toTensor();
    if (!IsInt8Weight(w)) return false;  // the operator's own check names it
    const int largest = Int8WeightMagnitude(w);
    if (largest > kInt8WeightLevels) throw EngineError(ErrorCode::kModelLoad, WeightRangeError(path, largest));
    return false;  // every node
  });
}

int IsolateInt8Weights(torch::jit::Module& module) {
  const c10::Symbol& linear_int8 = LinearInt8Op();
  std::unordered_map<torch::jit::Value*, torch::jit::Value*> copies;
  AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind() != linear_int8 || node->inputs().size() < 2) return false;
    torch::jit::Value* stored = node->input(1);
    if (stored->node()->kind() != c10::prim::Constant) return false;
    auto [it, fresh] = copies.emplace(stored, nullptr);
    if (fresh) {
      const std::optional<c10::IValue> value = torch::jit::toIValue(stored);
      if (!value || !value->isTensor()) return false;
      // A contiguous copy on memory of its own, at the top of the graph that uses it.
      torch::jit::Graph* graph = node->owningGraph();
      const torch::jit::WithInsertPoint top(graph->block()->nodes().front());
      it->second = graph->insertConstant(value->toTensor().clone(at::MemoryFormat::Contiguous));
    }
    if (it->second != nullptr) node->replaceInput(1, it->second);
    return false;  // every node
  });
  int isolated = 0;
  for (const auto& [stored, copy] : copies) {
    if (copy == nullptr) continue;
    ++isolated;
    // Every use was a weight slot (CheckInt8Weights), now the copy's: the old constant, and its
    // hold on the tensor other holders share, go.
    if (!stored->hasUses()) stored->node()->destroy();
  }
  return isolated;
}

std::unique_ptr<Int8WeightTable> Int8WeightsOf(const torch::jit::Module& module, Int8WeightTable::Packing packing) {
  const c10::Symbol& linear_int8 = LinearInt8Op();
  auto table = std::make_unique<Int8WeightTable>();
  AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind() != linear_int8 || node->inputs().size() < 2 ||
        node->input(1)->node()->kind() != c10::prim::Constant)
      return false;
    const std::optional<c10::IValue> value = torch::jit::toIValue(node->input(1));
    if (value && value->isTensor() && IsInt8Weight(value->toTensor()) && value->toTensor().dim() == 2)
      table->Add(value->toTensor(), packing);
    return false;  // every node
  });
  return table;
}

bool ReadsInt8WeightsLive(const torch::jit::Module& module) {
  const c10::Symbol& linear_int8 = LinearInt8Op();
  return AnyNode(module, [&](torch::jit::Node* node) {
    return node->kind() == linear_int8 && node->inputs().size() >= 2 &&
           node->input(1)->node()->kind() != c10::prim::Constant;
  });
}

int RetargetDeviceConstants(torch::jit::Module& module, const c10::Device& device) {
  int changed = 0;
  const std::string target = device.str();
  AnyNode(module, [&](torch::jit::Node* node) {
    if (node->kind() == c10::prim::Constant && node->output()->type()->kind() == c10::TypeKind::DeviceObjType &&
        node->s(c10::attr::value) != target) {
      node->s_(c10::attr::value, target);
      ++changed;
    }
    return false;  // every node
  });
  return changed;
}

namespace {

// A stream of the model's own on a GPU, from libtorch's pool: engines on one device no longer
// share (and serialise on) the legacy default stream.
std::optional<c10::Stream> OwnStream(const c10::Device& device) {
  if (!device.is_cuda()) return std::nullopt;
  return c10::impl::VirtualGuardImpl(device.type()).getStreamFromGlobalPool(device, /*isHighPriority=*/false);
}

}  // namespace

TorchScriptModel::TorchScriptModel(const LoadOptions& options)
    : device_(ResolveDevice(options)), stream_(OwnStream(device_)) {
  const CaptureTorchWarnings capture(options.torch_warnings_to_stderr);  // this load's, for info_.torch_warnings
  const DeviceScope scope(device_, stream_);
  const std::string& path = options.model_path;
  try {
    module_ = torch::jit::load(path, device_);
  } catch (const c10::Error& e) {
    throw EngineError(ErrorCode::kModelLoad, "'" + path + "' is not a loadable TorchScript module: " + Brief(e));
  }
  module_.eval();
  info_.loader = "torchscript";
  info_.device = device_.str();
  ReadEmbeddingSizes(module_, info_);

  const c10::ScalarType weights = ToScalarType(options.dtype);
  info_.dtype = DTypeName(weights);
  CastFloatingState(module_, weights);

  if (options.freeze) {
    // Freezing inlines weights and attributes so the graph executor can fold and fuse;
    // a module that cannot be frozen still runs, just unoptimised, and says so in info.
    try {
      module_ = torch::jit::freeze(module_);
      info_.frozen = true;
    } catch (const c10::Error&) {
      info_.frozen = false;
    }
  }
  RetargetDeviceConstants(module_, device_);
  const bool torch_ao = UsesTorchAoOps(module_);
  const bool linear_int8 = UsesLinearInt8(module_);
  info_.quantized = torch_ao || linear_int8;
  if (torch_ao && linear_int8) {
    throw EngineError(ErrorCode::kModelLoad, "'" + path + "' holds both bertgate::linear_int8 and torch.ao " +
                                                 "quantized:: layers; an int8 bundle is one or the other: re-export " +
                                                 "it with --quantize int8");
  }
  if (info_.quantized && device_.is_cuda()) {
    // Both int8 Linear layers have CPU kernels only: the probe would fail with libtorch's
    // "could not run on the CUDA backend", which names neither the bundle nor the way out.
    throw EngineError(ErrorCode::kModelLoad, "'" + path + "' holds int8 layers (" +
                                                 (torch_ao ? "quantized::" : "bertgate::linear_int8") +
                                                 "), which run on the CPU only; load it on \"cpu\", or export the " +
                                                 "model without --quantize for " + device_.str());
  }
  if (linear_int8) {
    CheckInt8Weights(module_, path);
    info_.int8_activation_bits = 8;  // 8 bits per row on every CPU
    info_.int8_op = "bertgate::linear_int8";
    if (options.int8_gemm == Int8Gemm::kAmx && !AmxInt8Available()) {
      throw EngineError(ErrorCode::kDeviceUnavailable, "'" + path + "' was to run its int8 layers on the AMX GEMM " +
                                                           "(BERTGATE_INT8_GEMM=amx), but this CPU has no AMX-INT8 " +
                                                           "or the kernel did not grant this process the tile state");
    }
    if (options.int8_gemm == Int8Gemm::kFbgemm && !FbgemmInt8Available()) {
      throw EngineError(ErrorCode::kDeviceUnavailable,
                        "'" + path + "' was to run its int8 layers on fbgemm's GEMM (BERTGATE_INT8_GEMM=fbgemm), " +
                            "but fbgemm does not run on this CPU (it needs x86-64 with AVX2) or this engine's " +
                            "libtorch has no fbgemm");
    }
    // Frozen, each layer's weight becomes a copy only the graph holds: fixed for the model's
    // life whatever else held the stored tensor, on either GEMM.
    IsolateInt8Weights(module_);
    // A weight read from an attribute (unfrozen, or one freezing kept because something else
    // holds or writes it) is read afresh on every call: it cannot be packed once.
    const bool live = ReadsInt8WeightsLive(module_);
    const bool packs = options.int8_gemm == Int8Gemm::kAmx || options.int8_gemm == Int8Gemm::kFbgemm;
    if (packs && live) {
      const char* which = options.int8_gemm == Int8Gemm::kAmx ? "the AMX GEMM (BERTGATE_INT8_GEMM=amx)"
                                                              : "fbgemm's GEMM (BERTGATE_INT8_GEMM=fbgemm)";
      throw EngineError(ErrorCode::kModelLoad,
                        "'" + path + "' reads int8 weights from attributes afresh on every call (" +
                            (info_.frozen ? "attributes freezing kept, as something else in the model holds or "
                                            "writes them"
                                          : "the model runs unfrozen: load it with freeze: true") +
                            "), which " + which + " cannot pack once; BERTGATE_INT8_GEMM=onednn, or unset, runs it " +
                            "on oneDNN's GEMM");
    }
    // The vetted weights, packed once, here, before the first run: the operator reads them for
    // the model's life, and checks the range of any other weight per call. The fastest GEMM the
    // CPU has unless one was asked for: AMX, then fbgemm (any x86-64 with AVX2), then oneDNN's,
    // which packs nothing ahead (weights read live run there too).
    using Packing = Int8WeightTable::Packing;
    Packing packing = Packing::kNone;
    if (!live && options.int8_gemm == Int8Gemm::kAmx) {
      packing = Packing::kAmx;
    } else if (!live && options.int8_gemm == Int8Gemm::kFbgemm) {
      packing = Packing::kFbgemm;
    } else if (!live && options.int8_gemm == Int8Gemm::kFastest) {
      packing = AmxInt8Available() ? Packing::kAmx : FbgemmInt8Available() ? Packing::kFbgemm : Packing::kNone;
    }
    int8_weights_ = Int8WeightsOf(module_, packing);
    info_.int8_gemm = packing == Packing::kAmx ? "amx" : packing == Packing::kFbgemm ? "fbgemm" : "onednn";
  } else if (options.int8_gemm == Int8Gemm::kAmx && torch_ao) {
    throw EngineError(ErrorCode::kModelLoad, "'" + path + "' holds torch.ao int8 layers (quantized::), which run " +
                                                 "on fbgemm, not on the AMX GEMM BERTGATE_INT8_GEMM=amx asks for: " +
                                                 "re-export it with --quantize int8");
  }
  if (torch_ao) {
    if (!FullRangeInt8Here(options)) ReduceInt8Range(module_);
    info_.int8_activation_bits = Int8ActivationBitsOf(module_);
    info_.int8_op = "quantized::linear_dynamic";
    const at::QEngine qengine = at::globalContext().qEngine();
    if (qengine != at::QEngine::X86 && qengine != at::QEngine::FBGEMM) {
      throw EngineError(ErrorCode::kModelLoad, "'" + path + "' holds dynamic int8 layers made for the x86 (fbgemm) " +
                                                   "quantized engine, which this CPU or libtorch lacks (it has " +
                                                   c10::toString(qengine) + ")");
    }
  }

  // Probe with the smallest input BERT accepts ([CLS] [SEP]-shaped): this checks the module's
  // signature and output and measures the label count.
  const ModelOutput probe = Run(path, 1, 2, "");
  const at::Tensor& logits = probe.logits;
  if (logits.dim() != 2 || logits.size(0) != 1 || logits.size(1) < 2 || !at::isFloatingType(logits.scalar_type())) {
    throw EngineError(ErrorCode::kModelOutput, "'" + path + "' returned logits of shape " + c10::str(logits.sizes()) +
                                                   " and dtype " + DTypeName(logits.scalar_type()) +
                                                   " for one input; expected floating [1, C] with C >= 2");
  }
  info_.num_labels = logits.size(1);
  info_.logits_dtype = DTypeName(logits.scalar_type());
  if (probe.features.defined()) {
    const at::Tensor& f = probe.features;
    if (f.dim() != 2 || f.size(0) != 1 || !at::isFloatingType(f.scalar_type())) {
      throw EngineError(ErrorCode::kModelOutput, "'" + path + "' returned features of shape " + c10::str(f.sizes()) +
                                                     " for one input; expected floating [1, H]");
    }
    info_.feature_width = f.size(1);
  }
  // The executor profiles the first runs and the fuser compiles for what it saw: done here, at
  // a shape like the traffic's, the first requests find the optimised graph ready.
  // Under a memory cap (cudaMemoryFraction) or on a busy device the full batch may not fit: the
  // warm-up halves its rows until one fits, as the classifier splits batches at run time (the
  // sequence length, which the executor profiles, stays). Only one row that does not fit fails.
  if (options.warmup_rows > 0 && options.warmup_seq_len > 0) {
    for (int64_t rows = options.warmup_rows;; rows = (rows + 1) / 2) {
      try {
        const ModelOutput warm = Run(path, rows, options.warmup_seq_len, " (warm-up)");
        CheckedLogits(warm.logits, rows, info_.num_labels);
        break;
      } catch (const EngineError& e) {
        if (rows == 1 || !LooksLikeOutOfMemory(e.what())) throw;
      }
    }
  }
  // A warning libtorch raises once per process (TORCH_WARN_ONCE) shows on the first load only;
  // RuntimeInfo keeps the process's.
  info_.torch_warnings = capture.seen();
}

// One forward pass at [rows, seq_len] of [CLS]-like ids with a full mask, during load: any
// failure is a load failure naming the file.
ModelOutput TorchScriptModel::Run(const std::string& path, int64_t rows, int64_t seq_len, const char* what) {
  const auto ids = at::zeros({rows, seq_len}, at::TensorOptions().dtype(at::kLong).device(device_));
  try {
    c10::InferenceMode guard;
    const Int8GemmScope gemm(int8_weights_.get());
    std::vector<c10::IValue> inputs{ids, at::ones_like(ids), at::zeros_like(ids)};
    return Outputs(module_.forward(inputs), &info_.output_kind);
  } catch (const EngineError&) {
    throw;
  } catch (const std::exception& e) {  // c10::Error, or the TorchScript interpreter's rethrow
    throw EngineError(ErrorCode::kModelLoad, "'" + path +
                                                 "' does not run on (input_ids, attention_mask, token_type_ids) "
                                                 "int64 [" +
                                                 std::to_string(rows) + ", " + std::to_string(seq_len) + "]" + what +
                                                 ": " + Brief(e.what()));
  }
}

ModelOutput TorchScriptModel::Forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& type_ids) {
  const Int8GemmScope gemm(int8_weights_.get());
  std::vector<c10::IValue> inputs{ids, mask, type_ids};
  return Outputs(module_.forward(inputs), nullptr);
}

// Accepts what a traced BertForSequenceClassification can return: the logits, a tuple or
// list whose first item is the logits (return_dict=False), or a dict with "logits" (and, from
// the exporter's --features, "features").
ModelOutput TorchScriptModel::Outputs(const c10::IValue& output, std::string* kind) {
  const auto found = [kind](const char* name, at::Tensor logits, at::Tensor features = at::Tensor()) {
    if (kind) *kind = name;
    return ModelOutput{std::move(logits), std::move(features)};
  };
  if (output.isTensor()) return found("tensor", output.toTensor());
  if (output.isTuple()) {
    const auto& items = output.toTupleRef().elements();
    if (!items.empty() && items[0].isTensor()) return found("tuple", items[0].toTensor());
  } else if (output.isList()) {
    const auto items = output.toList();
    if (items.size() > 0 && items.get(0).isTensor()) return found("tuple", items.get(0).toTensor());
  } else if (output.isGenericDict()) {
    const auto dict = output.toGenericDict();
    at::Tensor logits, features;
    for (const auto& entry : dict) {
      if (!entry.key().isString() || !entry.value().isTensor()) continue;
      if (entry.key().toStringRef() == "logits") logits = entry.value().toTensor();
      if (entry.key().toStringRef() == "features") features = entry.value().toTensor();
    }
    if (logits.defined()) return found("dict", logits, features);
  }
  throw EngineError(ErrorCode::kModelOutput, "the model returned " + output.tagKind() +
                                                 "; expected logits, a tuple whose first item is the logits, "
                                                 "or a dict with a 'logits' tensor");
}

std::unique_ptr<Model> LoadModel(const LoadOptions& options) {
  // Every file name goes to TorchScript today; an AOTInductor package (.pt2) would branch here.
  return std::make_unique<TorchScriptModel>(options);
}

}  // namespace bertgate
