// Loading and running TorchScript modules written here in TorchScript source: every output
// shape the engine accepts, and every way a model file can be wrong.

#include "../engine/torchscript_model.h"

#include <gtest/gtest.h>
#include <torch/csrc/jit/frontend/resolver.h>
#include <torch/csrc/jit/frontend/sugared_value.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "../engine/engine_api.h"
#include "../engine/engine_error.h"
#include "../engine/int8_linear.h"

namespace bertgate {
namespace {

namespace fs = std::filesystem;

class TorchScriptModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bertgate-engine-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Saves a module whose forward is `body` (TorchScript) over (ids, mask, types).
  std::string Save(const std::string& name, const std::string& body, const std::string& returns) {
    torch::jit::Module m("Model");
    m.define("def forward(self, ids: Tensor, mask: Tensor, types: Tensor) -> " + returns + ":\n" + body);
    const std::string path = (dir_ / (name + ".pt")).string();
    m.save(path);
    return path;
  }

  Outcome<std::unique_ptr<Engine>> Load(const std::string& path, DeviceKind device = DeviceKind::kCpu) {
    LoadOptions options;
    options.model_path = path;
    options.device = device;
    options.threads = 1;
    return bertgate_engine_library_v10()->Load(options);
  }

  fs::path dir_;
};

// Module::define knows `torch.` (aten) alone; Python's `torch.ops.quantized.` and
// `torch.ops.bertgate.` are these.
struct QuantizedOpsResolver : torch::jit::Resolver {
  std::shared_ptr<torch::jit::SugaredValue> resolveValue(const std::string& name, torch::jit::GraphFunction& fn,
                                                         const torch::jit::SourceRange& loc) override {
    if (name == "quantized" || name == "bertgate") return std::make_shared<torch::jit::BuiltinModule>(name);
    return torch::jit::nativeResolver()->resolveValue(name, fn, loc);
  }
};

// Each row's logits are (sum ids, sum mask, sum types): easy to predict from the inputs.
const char* kSums = "    return torch.stack([ids.sum(1).float(), mask.sum(1).float(), types.sum(1).float()], 1)\n";

InferInput TwoRows() {
  InferInput in;
  in.rows = 2;
  in.seq_len = 3;
  in.tokens = {1, 2, 3, 4, 5, 0,   // ids
               1, 1, 1, 1, 1, 0,   // mask
               0, 0, 1, 0, 1, 1};  // type ids
  in.top_k = 3;
  in.want_logits = true;
  in.want_log_probs = true;
  return in;
}

TEST_F(TorchScriptModelTest, AcceptsPlainTupleAndDictOutputs) {
  const std::string tuple_body =
      "    x = torch.stack([ids.sum(1).float(), mask.sum(1).float(), types.sum(1).float()], 1)\n"
      "    return (x, ids)\n";
  const std::string dict_body =
      "    x = torch.stack([ids.sum(1).float(), mask.sum(1).float(), types.sum(1).float()], 1)\n"
      "    return {'hidden': ids.float(), 'logits': x}\n";
  const struct {
    std::string path, kind;
  } cases[] = {
      {Save("plain", kSums, "Tensor"), "tensor"},
      {Save("tuple", tuple_body, "Tuple[Tensor, Tensor]"), "tuple"},
      {Save("dict", dict_body, "Dict[str, Tensor]"), "dict"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.kind);
    auto engine = Load(c.path);
    ASSERT_TRUE(engine.ok()) << engine.failure().message;
    EXPECT_EQ(engine.value()->info().output_kind, c.kind);
    EXPECT_EQ(engine.value()->info().num_labels, 3);
    EXPECT_EQ(engine.value()->info().device, "cpu");
    auto result = engine.value()->Infer(TwoRows());
    ASSERT_TRUE(result.ok()) << result.failure().message;
    const InferOutput& out = *result.value();
    const std::vector<float> expected{6, 3, 1, 9, 2, 2};  // widened int64 sums of each row
    EXPECT_EQ(out.logits, expected);
    EXPECT_EQ(out.top_index[0], 0);  // row 0: 6 > 3 > 1
    EXPECT_EQ(out.top_index[3], 0);  // row 1: 9 > 2 == 2, tie keeps index 1 before 2
    EXPECT_EQ(out.top_index[4], 1);
    EXPECT_EQ(out.top_index[5], 2);
    EXPECT_EQ(out.valid[0], 1);
    const double lse = std::log(std::exp(6.0) + std::exp(3.0) + std::exp(1.0));
    EXPECT_NEAR(out.log_probs[1], 3.0 - lse, 1e-5);
  }
}

TEST_F(TorchScriptModelTest, ReadsEmbeddingSizesBeforeFreezing) {
  torch::jit::Module words("Words"), embeddings("Embeddings"), m("Model");
  words.register_parameter("weight", torch::zeros({123, 4}), false);
  embeddings.register_module("word_embeddings", words);
  m.register_module("embeddings", embeddings);
  m.define(std::string("def forward(self, ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:\n") + kSums);
  const std::string path = (dir_ / "embeddings.pt").string();
  m.save(path);
  auto engine = Load(path);
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  EXPECT_EQ(engine.value()->info().vocab_rows, 123);
  EXPECT_EQ(engine.value()->info().position_rows, -1);
  EXPECT_TRUE(engine.value()->info().frozen);
}

TEST_F(TorchScriptModelTest, MarksRowsWithNonFiniteLogitsInvalid) {
  auto engine = Load(Save("nan",
                          "    x = torch.stack([ids.sum(1).float(), mask.sum(1).float(), types.sum(1).float()], 1)\n"
                          "    return torch.where(ids[:, :1] == 4, torch.full_like(x, float('nan')), x)\n",
                          "Tensor"));
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  auto result = engine.value()->Infer(TwoRows());
  ASSERT_TRUE(result.ok()) << result.failure().message;
  EXPECT_EQ(result.value()->valid[0], 1);
  EXPECT_EQ(result.value()->valid[1], 0);
  EXPECT_EQ(result.value()->top_index[3], -1);
}

TEST_F(TorchScriptModelTest, ReportsAModelFailureAsInferenceWithItsCause) {
  torch::jit::Module m("Model");
  m.register_parameter("table", torch::zeros({10, 3}), false);
  m.define(
      "def forward(self, ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:\n"
      "    return torch.embedding(self.table, ids).sum(1)\n");
  const std::string path = (dir_ / "lookup.pt").string();
  m.save(path);
  auto engine = Load(path);
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  InferInput in = TwoRows();  // ids up to 5 fit the table
  in.tokens[3] = 99;          // this one does not
  auto result = engine.value()->Infer(in);
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.failure().code, ErrorCode::kInference);
  EXPECT_EQ(result.failure().message.find('\n'), std::string::npos) << result.failure().message;
  EXPECT_NE(result.failure().message.find("index out of range"), std::string::npos) << result.failure().message;
}

TEST_F(TorchScriptModelTest, RetargetsDeviceConstantsThatATraceBakedIn) {
  torch::jit::Module m("Model");
  m.define(
      "def forward(self, ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:\n"
      "    cpu = torch.device('cpu')\n"
      "    if ids.size(0) > 1:\n"
      "        return torch.zeros(ids.size(0), 3, device=cpu)\n"
      "    return torch.ones(1, 3, device=torch.device('cpu'))\n");
  EXPECT_GE(RetargetDeviceConstants(m, c10::Device("cuda:1")), 1);  // TorchScript pools equal constants
  const std::string graph = m.get_method("forward").graph()->toString();
  EXPECT_EQ(graph.find("\"cpu\""), std::string::npos) << graph;
  EXPECT_NE(graph.find("\"cuda:1\""), std::string::npos) << graph;
  EXPECT_EQ(RetargetDeviceConstants(m, c10::Device("cuda:1")), 0);
  // And back: a bundle traced on a GPU runs on a CPU.
  EXPECT_GE(RetargetDeviceConstants(m, c10::Device("cpu")), 1);
  EXPECT_EQ(m.get_method("forward").graph()->toString().find("cuda"), std::string::npos);
  const auto ids = torch::zeros({2, 3}, torch::kLong);
  EXPECT_EQ(m.forward({ids, ids, ids}).toTensor().device(), c10::Device("cpu"));
}

TEST_F(TorchScriptModelTest, TurnsInt8ActivationsTo7BitsWhereAsked) {
  // An int8 Linear as the exporter writes it: reduce_range false, 8-bit activations. (12 is
  // torch.qint8, which Module::define cannot name.)
  const auto int8_linear = [] {
    torch::jit::Module m("Model");
    m.define(
        "def forward(self, x: Tensor) -> Tensor:\n"
        "    w = torch.quantize_per_tensor(torch.linspace(-1.0, 1.0, 12).reshape(4, 3), 0.01, 0, 12)\n"
        "    packed = quantized.linear_prepack(w, None)\n"
        "    return quantized.linear_dynamic(x, packed, False)\n",
        std::make_shared<QuantizedOpsResolver>());
    return m;
  };
  const auto x = torch::linspace(-3, 5, 15).reshape({5, 3});
  torch::jit::Module m = int8_linear();
  EXPECT_TRUE(UsesQuantizedOps(m));
  EXPECT_EQ(Int8ActivationBitsOf(m), 8);
  // Changed before its first run, as the engine does at load (the executor keeps the plan of
  // a graph it has run).
  EXPECT_EQ(ReduceInt8Range(m), 1);
  EXPECT_EQ(Int8ActivationBitsOf(m), 7);
  EXPECT_EQ(ReduceInt8Range(m), 0);  // already 7 bits: nothing to change
  const at::Tensor seven = m.forward({x}).toTensor();
  const at::Tensor eight = int8_linear().forward({x}).toTensor();
  // Half the levels: rounded differently, and still the same layer, near its float product.
  // (Against the float product, not the 8-bit run: without AVX-512 VNNI fbgemm's 16-bit sums
  // saturate at 8 bits, which is why the engine asks for 7 there.)
  EXPECT_GT((seven - eight).abs().max().item<double>(), 1e-3);
  const at::Tensor w = at::linspace(-1.0, 1.0, 12).reshape({4, 3});
  const at::Tensor exact = x.matmul(at::round(w / 0.01).mul(0.01).t());
  EXPECT_LT((seven - exact).abs().max().item<double>(), 0.5);
  // A float module has no int8 layer to change.
  torch::jit::Module plain("Plain");
  plain.define("def forward(self, x: Tensor) -> Tensor:\n    return x * 2\n");
  EXPECT_EQ(ReduceInt8Range(plain), 0);
}

TEST_F(TorchScriptModelTest, VetsTheWeightsOfLinearInt8WhereverTheGraphKeepsThem) {
  // A module with one bertgate::linear_int8 call on the int8 attribute `w` (values up to
  // `largest`), after `prelude` ran in its forward.
  const auto module = [](int largest, const std::string& prelude) {
    torch::jit::Module m("Model");
    m.register_attribute("w", c10::TensorType::get(),
                         at::linspace(-largest, largest, 12).round().to(at::kChar).reshape({4, 3}));
    m.register_attribute("s", c10::TensorType::get(), at::full({4}, 0.01));
    m.define("def forward(self, x: Tensor) -> Tensor:\n" + prelude +
                 "    return bertgate.linear_int8(x, self.w, self.s, None, 0)\n",
             std::make_shared<QuantizedOpsResolver>());
    return m;
  };
  const auto refusal = [](const torch::jit::Module& m) {
    try {
      CheckInt8Weights(m, "m.pt");
    } catch (const EngineError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_TRUE(UsesLinearInt8(module(64, "")));
  EXPECT_EQ(refusal(module(64, "")), "");
  // Unfrozen, the weight is an attribute read live: the operator checks its range at every call
  // (whatever wrote it since), and the load leaves it to that.
  EXPECT_EQ(refusal(module(100, "")), "");
  try {
    module(100, "").forward({at::randn({2, 3})});
    ADD_FAILURE() << "a weight of 100 ran";
  } catch (const std::exception& e) {  // the interpreter rethrows the operator's c10::Error
    EXPECT_NE(std::string(e.what()).find("holds int8 values up to 100 in magnitude at this call"), std::string::npos);
  }
  EXPECT_NO_THROW(module(64, "").forward({at::randn({2, 3})}));
  // Frozen, the stored weight is a constant whose range is checked where it is used.
  EXPECT_NE(refusal(torch::jit::freeze(module(100, ""))).find("holds int8 weights up to 100"), std::string::npos);
  // Changed in the graph before the call: what the load read is not what would run.
  EXPECT_NE(refusal(module(64, "    self.w.mul_(2)\n")).find("passes the int8 weight 'w'"), std::string::npos);
  EXPECT_NE(refusal(module(64, "    self.w = self.w * 2\n")).find("the int8 weight 'w' of bertgate::linear_int8"),
            std::string::npos);
  // Frozen, a weight constant read by another operator too: the same rule as an attribute's.
  EXPECT_NE(refusal(torch::jit::freeze(module(64, "    print(x + self.w)\n")))
                .find("passes an int8 weight of bertgate::linear_int8 (a constant of its graph) to another operator"),
            std::string::npos);
  // Computed in the graph: nothing stored to vet. (1 is torch.int8, which Module::define cannot name.)
  torch::jit::Module computed("Computed");
  computed.register_attribute("s", c10::TensorType::get(), at::full({4}, 0.01));
  computed.define(
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    return bertgate.linear_int8(x, torch.full([4, 3], 100, dtype=1), self.s, None, 0)\n",
      std::make_shared<QuantizedOpsResolver>());
  EXPECT_NE(refusal(computed).find("computes a weight of bertgate::linear_int8"), std::string::npos);
}

TEST_F(TorchScriptModelTest, GivesEachFrozenInt8WeightACopyNoOtherHolderCanWrite) {
  // `row` views the weight's memory and is written before each call. torch's freezing sees the
  // overlap and keeps the weight an attribute, read live (and so not packable once); a constant
  // over memory something else writes is what IsolateInt8Weights guards against, made here by
  // hand from that frozen graph: the attribute read replaced by a constant of the same tensor.
  at::manual_seed(5);
  const at::Tensor w = at::randint(-8, 9, {4, 3}, at::kChar);
  torch::jit::Module m("Written");
  m.register_attribute("w", c10::TensorType::get(), w);
  m.register_attribute("row", c10::TensorType::get(), w.narrow(0, 1, 1));
  m.register_attribute("s", c10::TensorType::get(), at::full({4}, 0.01));
  m.define(
      "def forward(self, x: Tensor) -> Tensor:\n"
      "    self.row.add_(1)\n"
      "    return bertgate.linear_int8(x, self.w, self.s, None, 0)\n",
      std::make_shared<QuantizedOpsResolver>());
  torch::jit::Module frozen = torch::jit::freeze(m);
  EXPECT_TRUE(ReadsInt8WeightsLive(frozen));  // an attribute: read afresh each call
  EXPECT_EQ(Int8WeightsOf(frozen, Int8WeightTable::Packing::kNone)->size(), 0u);
  const std::shared_ptr<torch::jit::Graph> graph = frozen.get_method("forward").graph();
  for (torch::jit::Node* node : graph->nodes()) {
    if (node->kind() != c10::prim::GetAttr || node->s(c10::attr::name) != "w") continue;
    const torch::jit::WithInsertPoint here(node);
    node->output()->replaceAllUsesWith(graph->insertConstant(w));
  }
  const at::Tensor x = at::randn({2, 3});
  const at::Tensor stored = w.clone();
  CheckInt8Weights(frozen, "m.pt");
  EXPECT_EQ(IsolateInt8Weights(frozen), 1);
  const at::Tensor first = frozen.forward({x}).toTensor();
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(at::equal(frozen.forward({x}).toTensor(), first));
  EXPECT_FALSE(at::equal(w, stored));  // the shared memory was written, four times
  EXPECT_TRUE(at::equal(first, LinearInt8(x, stored, at::full({4}, 0.01), c10::nullopt, 0)));
  // Now every weight is a constant the graph alone holds: vetted for the model's life, packable once.
  EXPECT_FALSE(ReadsInt8WeightsLive(frozen));
  const std::unique_ptr<Int8WeightTable> table = Int8WeightsOf(frozen, Int8WeightTable::Packing::kAmx);
  EXPECT_EQ(table->size(), 1u);
  EXPECT_TRUE(ReadsInt8WeightsLive(m));
}

TEST_F(TorchScriptModelTest, CastsStoredHalfWeightsButNotIntegerBuffers) {
  torch::jit::Module m("Model");
  m.register_parameter("table", torch::randn({10, 3}).to(torch::kHalf), false);
  m.register_buffer("rows", torch::tensor({0, 3, 5}, torch::kLong));
  m.define(
      "def forward(self, ids: Tensor, mask: Tensor, types: Tensor) -> Tensor:\n"
      "    picked = self.table.index_select(0, self.rows)\n"
      "    return picked.sum(0, keepdim=True).expand(ids.size(0), 3) + ids.sum(1, keepdim=True).to(picked.dtype)\n");
  const std::string path = (dir_ / "half.pt").string();
  m.save(path);
  auto engine = Load(path);  // float32 requested
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  EXPECT_EQ(engine.value()->info().logits_dtype, "float32");
  auto result = engine.value()->Infer(TwoRows());
  ASSERT_TRUE(result.ok()) << result.failure().message;
  EXPECT_EQ(result.value()->valid[0], 1);
}

TEST_F(TorchScriptModelTest, RejectsOutputsThatAreNotLogits) {
  auto not_tensor = Load(Save("str", "    return 'hello'\n", "str"));
  ASSERT_FALSE(not_tensor.ok());
  EXPECT_EQ(not_tensor.failure().code, ErrorCode::kModelOutput);
  EXPECT_NE(not_tensor.failure().message.find("returned String"), std::string::npos) << not_tensor.failure().message;

  auto one_label = Load(Save("narrow", "    return ids.sum(1, keepdim=True).float()\n", "Tensor"));
  ASSERT_FALSE(one_label.ok());
  EXPECT_EQ(one_label.failure().code, ErrorCode::kModelOutput);
  EXPECT_NE(one_label.failure().message.find("[1, 1]"), std::string::npos) << one_label.failure().message;

  auto no_logits = Load(Save("dict", "    return {'scores': ids.float()}\n", "Dict[str, Tensor]"));
  ASSERT_FALSE(no_logits.ok());
  EXPECT_EQ(no_logits.failure().code, ErrorCode::kModelOutput);
}

TEST_F(TorchScriptModelTest, ReadsFloat64LogitsAsTheirValues) {
  auto engine =
      Load(Save("double", "    return torch.tensor([[0.0, 0.0, 10.0]]).double().expand(ids.size(0), 3)\n", "Tensor"));
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  EXPECT_EQ(engine.value()->info().logits_dtype, "float64");
  auto result = engine.value()->Infer(TwoRows());
  ASSERT_TRUE(result.ok()) << result.failure().message;
  const InferOutput& out = *result.value();
  EXPECT_EQ(out.top_index[0], 2);
  EXPECT_NEAR(std::exp(out.top_log_prob[0]), 1.0 / (1.0 + 2.0 * std::exp(-10.0)), 1e-6);
  EXPECT_EQ(out.logits, (std::vector<float>{0, 0, 10, 0, 0, 10}));
}

// The output is checked on every batch, not only at the load probe ([1, 2] tokens).
TEST_F(TorchScriptModelTest, RejectsAnOutputWhoseWidthChangesAfterTheProbe) {
  auto engine = Load(Save("per_token", "    return ids.float()\n", "Tensor"));  // one column per token
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  EXPECT_EQ(engine.value()->info().num_labels, 2);
  auto result = engine.value()->Infer(TwoRows());  // 3 tokens
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.failure().code, ErrorCode::kModelOutput);
  EXPECT_NE(result.failure().message.find("[2, 3]"), std::string::npos) << result.failure().message;
  EXPECT_NE(result.failure().message.find("2 labels"), std::string::npos) << result.failure().message;
}

TEST_F(TorchScriptModelTest, RejectsAnIntegerOutputAfterTheProbe) {
  auto engine = Load(Save("int_later",
                          "    x = torch.stack([ids.sum(1), mask.sum(1).long(), types.sum(1).long()], 1)\n"
                          "    if ids.size(1) == 2:\n"
                          "        return x.float()\n"
                          "    return x\n",
                          "Tensor"));
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  auto result = engine.value()->Infer(TwoRows());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.failure().code, ErrorCode::kModelOutput);
  EXPECT_NE(result.failure().message.find("int64"), std::string::npos) << result.failure().message;
}

TEST_F(TorchScriptModelTest, RejectsModulesWithAnotherSignature) {
  torch::jit::Module m("Model");
  m.define("def forward(self, ids: Tensor) -> Tensor:\n    return ids.float()\n");
  const std::string path = (dir_ / "one_input.pt").string();
  m.save(path);
  auto engine = Load(path);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.failure().code, ErrorCode::kModelLoad);
  EXPECT_NE(engine.failure().message.find("does not run on (input_ids, attention_mask, token_type_ids)"),
            std::string::npos)
      << engine.failure().message;
}

TEST_F(TorchScriptModelTest, RejectsMissingAndCorruptFiles) {
  auto missing = Load((dir_ / "nope.pt").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.failure().code, ErrorCode::kModelLoad);
  EXPECT_NE(missing.failure().message.find("nope.pt"), std::string::npos);

  const std::string corrupt = (dir_ / "corrupt.pt").string();
  std::ofstream(corrupt) << "this is not a zip archive";
  auto bad = Load(corrupt);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.failure().code, ErrorCode::kModelLoad);
  EXPECT_NE(bad.failure().message.find("is not a loadable TorchScript module"), std::string::npos);

  // A real archive cut short, as an interrupted copy leaves it.
  const std::string good = Save("whole", kSums, "Tensor");
  const std::string truncated = (dir_ / "truncated.pt").string();
  fs::copy_file(good, truncated);
  fs::resize_file(truncated, fs::file_size(good) / 2);
  auto cut = Load(truncated);
  ASSERT_FALSE(cut.ok());
  EXPECT_EQ(cut.failure().code, ErrorCode::kModelLoad);
}

TEST_F(TorchScriptModelTest, CudaWithoutCudaIsDeviceUnavailable) {
  if (torch::cuda::is_available()) GTEST_SKIP() << "this machine has CUDA";
  auto engine = Load(Save("plain", kSums, "Tensor"), DeviceKind::kCuda);
  ASSERT_FALSE(engine.ok());
  EXPECT_EQ(engine.failure().code, ErrorCode::kDeviceUnavailable);
  EXPECT_NE(engine.failure().message.find("'cuda:0'"), std::string::npos) << engine.failure().message;
}

}  // namespace
}  // namespace bertgate
