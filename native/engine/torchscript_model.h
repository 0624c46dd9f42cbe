#pragma once
// A traced Hugging Face BertForSequenceClassification in TorchScript.

#include <torch/script.h>

#include <memory>
#include <string>

#include "amx_int8_gemm.h"
#include "model.h"

namespace bertgate {

// A trace records devices as constants: transformers builds the attention mask "on the
// input's device", which a trace made on a CPU writes down as torch.device("cpu") (and one
// made on a GPU as "cuda:0"). This points every device constant of every method at `device`,
// so one bundle runs wherever it is loaded; torch.jit.load's map_location moves the weights
// but not these. A BERT classifier runs on one device, so no constant has to stay put.
// Returns how many constants it changed.
int RetargetDeviceConstants(torch::jit::Module& module, const c10::Device& device);

// Whether any method of the module runs int8 operators: bertgate::linear_int8 (bundles of
// `--quantize int8` today) or torch.ao's quantized:: ones (int8 bundles exported before it).
bool UsesQuantizedOps(const torch::jit::Module& module);

// Whether any method runs torch.ao's quantized:: operators: the older int8 bundles, which need
// the x86 quantized engine and whose activation bits the engine may lower (ReduceInt8Range).
bool UsesTorchAoOps(const torch::jit::Module& module);

// Whether any method runs bertgate::linear_int8 (the int8 bundles of today's exporter).
bool UsesLinearInt8(const torch::jit::Module& module);

// What a graph gives bertgate::linear_int8 as its weight must be a stored tensor, read before
// the first call: a constant of the frozen graph (checked here, against [-64, 64]) or an
// attribute (read live: the operator checks its range at every call), used only as that
// operator's weight. Every function of the module's code is read, forked tasks' and classes'
// methods included. Throws EngineError(kModelLoad) naming `path` otherwise: a weight computed or
// written in the graph could hold anything by the time it runs. (Other holders of the same
// tensor are IsolateInt8Weights' business, for frozen graphs.)
void CheckInt8Weights(const torch::jit::Module& module, const std::string& path);

// The `reduce_range` argument of quantized::linear_dynamic: true quantizes activations to 7
// bits, false to 8. The exporter writes false (8 bits agree better with the float model;
// bundles from before it wrote true); fbgemm's kernels on CPUs without AVX-512 VNNI sum pairs
// of 8-bit products in saturating int16, which 7 bits keep clear of. This turns it on in every
// call of the module; returns how many it changed.
int ReduceInt8Range(torch::jit::Module& module);

// The activation bits of the module's int8 Linear layers: 7 if any call reduces the range
// (or decides it at run time), else 8.
int Int8ActivationBitsOf(const torch::jit::Module& module);

// Whether 8-bit activations are safe and wanted here: the CPU has AVX-512 VNNI, and the load
// did not ask for 7 bits (LoadOptions::int8_seven_bits: the same rounding on every host of a
// fleet of mixed CPUs).
bool FullRangeInt8Here(const LoadOptions& options);

// Gives each weight constant of bertgate::linear_int8 in a frozen graph a copy of its own, held
// by that graph alone: other attributes, lists, objects or views may hold (and write, with
// .data, without a version bump) the tensor freezing inlined, but not the copy, so the weights a
// model runs, and their AMX packing, are what the load read. Returns how many it copied. Call
// after CheckInt8Weights (which leaves only weight slots among the constants' uses).
int IsolateInt8Weights(torch::jit::Module& module);

// The weight constants of a frozen module's bertgate::linear_int8 calls (after
// CheckInt8Weights and IsolateInt8Weights), the weights the operator may trust for the model's
// life, each packed for the GEMM `packing` names.
std::unique_ptr<Int8WeightTable> Int8WeightsOf(const torch::jit::Module& module, Int8WeightTable::Packing packing);

// Whether any bertgate::linear_int8 call reads its weight from something other than a constant
// (an attribute: unfrozen, or kept by freezing): read afresh on every call, not packable once.
bool ReadsInt8WeightsLive(const torch::jit::Module& module);

class TorchScriptModel : public Model {
 public:
  explicit TorchScriptModel(const LoadOptions& options);
  ModelOutput Forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor& type_ids) override;
  const ModelInfo& info() const override { return info_; }
  const c10::Device& device() const override { return device_; }
  std::optional<c10::Stream> stream() const override { return stream_; }

 private:
  ModelOutput Run(const std::string& path, int64_t rows, int64_t seq_len, const char* what);
  // Finds the logits (and the features, in a dict with "features") in the module's output;
  // names where the logits were found in *kind.
  static ModelOutput Outputs(const c10::IValue& output, std::string* kind);

  c10::Device device_;
  std::optional<c10::Stream> stream_;
  // The int8 weights this model's load vetted, packed where it runs the AMX GEMM; null for a
  // model without bertgate::linear_int8. In force (Int8GemmScope) around every forward pass of
  // this model, freed with it.
  std::unique_ptr<Int8WeightTable> int8_weights_;
  torch::jit::Module module_;
  ModelInfo info_;
};

}  // namespace bertgate
