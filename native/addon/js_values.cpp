#include "js_values.h"

#include <vector>

namespace bertgate {
namespace {

using Owner = std::shared_ptr<InferOutput>;

template <class T>
Napi::TypedArrayOf<T> View(Napi::Env env, const Owner& owner, std::vector<T>& data) {
  if (data.empty()) return Napi::TypedArrayOf<T>::New(env, 0);
  const size_t bytes = data.size() * sizeof(T);
  // External memory is invisible to V8's heap accounting; reporting it lets the garbage
  // collector see what a result really holds (large when full log-probabilities are asked).
  Napi::MemoryManagement::AdjustExternalMemory(env, static_cast<int64_t>(bytes));
  auto buffer = Napi::ArrayBuffer::New(
      env, data.data(), bytes,
      [bytes](Napi::Env finalize_env, void*, Owner* hint) {
        // Finalizers also run while the environment is torn down: the raw call, whose
        // failure is harmless then, rather than node-addon-api's, which would throw.
        int64_t adjusted;
        napi_adjust_external_memory(finalize_env, -static_cast<int64_t>(bytes), &adjusted);
        delete hint;
      },
      new Owner(owner));
  return Napi::TypedArrayOf<T>::New(env, data.size(), buffer, 0);
}

template <class T>
std::vector<T> Copy(const Napi::Value& value) {
  const auto array = value.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(array.Data(), array.Data() + array.ElementLength());
}

}  // namespace

Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

namespace {

Napi::Array Strings(Napi::Env env, const std::vector<std::string>& items) {
  Napi::Array array = Napi::Array::New(env, items.size());
  for (uint32_t i = 0; i < items.size(); ++i) array.Set(i, Napi::String::New(env, items[i]));
  return array;
}

Napi::Object CpuCache(Napi::Env env, const CpuCacheStats& stats) {
  Napi::Object o = Napi::Object::New(env);
  const auto number = [&](int64_t v) { return Napi::Number::New(env, static_cast<double>(v)); };
  o.Set("installed", Napi::Boolean::New(env, stats.installed));
  o.Set("liveBytes", number(stats.live_bytes));
  o.Set("peakLiveBytes", number(stats.peak_live_bytes));
  o.Set("cachedBytes", number(stats.cached_bytes));
  o.Set("cacheLimitBytes", number(stats.cache_limit_bytes));
  o.Set("reused", number(stats.reused));
  o.Set("mapped", number(stats.mapped));
  o.Set("unmapped", number(stats.unmapped));
  return o;
}

}  // namespace

Napi::Object ToJs(Napi::Env env, const ModelInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("loader", info.loader);
  o.Set("device", info.device);
  o.Set("dtype", info.dtype);
  o.Set("outputKind", info.output_kind);
  o.Set("logitsDtype", info.logits_dtype);
  o.Set("numLabels", Napi::Number::New(env, static_cast<double>(info.num_labels)));
  o.Set("frozen", Napi::Boolean::New(env, info.frozen));
  o.Set("quantized", Napi::Boolean::New(env, info.quantized));
  o.Set("int8ActivationBits", Napi::Number::New(env, info.int8_activation_bits));
  o.Set("int8Op", info.int8_op);
  o.Set("int8Gemm", info.int8_gemm);
  o.Set("featureWidth", Napi::Number::New(env, static_cast<double>(info.feature_width)));
  o.Set("vocabRows", Napi::Number::New(env, static_cast<double>(info.vocab_rows)));
  o.Set("positionRows", Napi::Number::New(env, static_cast<double>(info.position_rows)));
  o.Set("typeVocabRows", Napi::Number::New(env, static_cast<double>(info.type_vocab_rows)));
  o.Set("torchWarnings", Strings(env, info.torch_warnings));
  return o;
}

Napi::Object ToJs(Napi::Env env, const RuntimeInfo& info) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("torchVersion", info.torch_version);
  o.Set("cxx11Abi", Napi::Boolean::New(env, info.cxx11_abi));
  o.Set("cudaAvailable", Napi::Boolean::New(env, info.cuda_available));
  o.Set("cudaDeviceCount", Napi::Number::New(env, info.cuda_device_count));
  o.Set("intraOpThreads", Napi::Number::New(env, info.intra_op_threads));
  o.Set("interopThreads", Napi::Number::New(env, info.interop_threads));
  o.Set("parallelInfo", info.parallel_info);
  o.Set("torchWarnings", Strings(env, info.torch_warnings));
  o.Set("cpuCache", CpuCache(env, info.cpu_cache));
  return o;
}

Napi::Object ToJs(Napi::Env env, const EngineBuild& build) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("torchVersion", build.torch_version);
  o.Set("cudaKernels", Napi::Boolean::New(env, build.cuda_kernels));
  return o;
}

Napi::Object ToJs(Napi::Env env, const std::shared_ptr<InferOutput>& out) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("rows", Napi::Number::New(env, static_cast<double>(out->rows)));
  o.Set("cols", Napi::Number::New(env, static_cast<double>(out->cols)));
  o.Set("topK", Napi::Number::New(env, static_cast<double>(out->top_k)));
  o.Set("topIndex", View(env, out, out->top_index));
  o.Set("topLogProb", View(env, out, out->top_log_prob));
  o.Set("margin", View(env, out, out->margin));
  o.Set("entropy", View(env, out, out->entropy));
  o.Set("energy", View(env, out, out->energy));
  o.Set("valid", View(env, out, out->valid));
  o.Set("logits", View(env, out, out->logits));
  o.Set("logProbs", View(env, out, out->log_probs));
  o.Set("features", View(env, out, out->features));
  o.Set("oodScore", View(env, out, out->ood_score));
  o.Set("forwardMs", Napi::Number::New(env, out->forward_ms));
  o.Set("cpuCache", CpuCache(env, out->cpu_cache));
  return o;
}

LoadOptions LoadOptionsFromJs(const Napi::Object& o) {
  LoadOptions options;
  options.model_path = o.Get("modelPath").As<Napi::String>().Utf8Value();
  options.device = o.Get("device").As<Napi::String>().Utf8Value() == "cuda" ? DeviceKind::kCuda : DeviceKind::kCpu;
  options.device_index = o.Get("deviceIndex").As<Napi::Number>().Int32Value();
  const std::string dtype = o.Get("dtype").As<Napi::String>().Utf8Value();
  options.dtype = dtype == "float16" ? DType::kFloat16 : dtype == "bfloat16" ? DType::kBFloat16 : DType::kFloat32;
  options.threads = o.Get("threads").As<Napi::Number>().Int32Value();
  options.freeze = o.Get("freeze").As<Napi::Boolean>().Value();
  options.cuda_memory_fraction = o.Get("cudaMemoryFraction").As<Napi::Number>().DoubleValue();
  options.torch_warnings_to_stderr = o.Get("torchWarningsToStderr").As<Napi::Boolean>().Value();
  options.int8_seven_bits = o.Get("int8SevenBits").As<Napi::Boolean>().Value();
  const std::string gemm = o.Get("int8GemmRequested").As<Napi::String>().Utf8Value();  // checked in TypeScript
  options.int8_gemm = gemm == "amx"      ? Int8Gemm::kAmx
                      : gemm == "fbgemm" ? Int8Gemm::kFbgemm
                      : gemm == "onednn" ? Int8Gemm::kOnednn
                                         : Int8Gemm::kFastest;
  options.cpu_cache = o.Get("cpuCache").As<Napi::Boolean>().Value();
  options.warmup_rows = o.Get("warmupRows").As<Napi::Number>().Int64Value();
  options.warmup_seq_len = o.Get("warmupSeqLen").As<Napi::Number>().Int64Value();
  options.gate_dim = o.Get("gateDim").As<Napi::Number>().Int64Value();
  if (options.gate_dim > 0) {
    options.gate_projection = Copy<float>(o.Get("gateProjection"));
    options.gate_centres = Copy<float>(o.Get("gateCentres"));
  }
  return options;
}

std::shared_ptr<InferInput> InferInputFromJs(const Napi::Object& o) {
  auto in = std::make_shared<InferInput>();
  in->tokens = Copy<int32_t>(o.Get("tokens"));
  in->rows = o.Get("rows").As<Napi::Number>().Int64Value();
  in->seq_len = o.Get("seqLen").As<Napi::Number>().Int64Value();
  in->temperature = o.Get("temperature").As<Napi::Number>().FloatValue();
  in->top_k = o.Get("topK").As<Napi::Number>().Int32Value();
  in->want_logits = o.Get("wantLogits").As<Napi::Boolean>().Value();
  in->want_log_probs = o.Get("wantLogProbs").As<Napi::Boolean>().Value();
  in->want_features = o.Get("wantFeatures").As<Napi::Boolean>().Value();
  return in;
}

}  // namespace bertgate
