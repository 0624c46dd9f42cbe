// The engine around a model: queueing and completing batches, the device and stream every
// entry point makes current, the warm-up at load, and the process-wide settings a load makes.
// A fake device (c10's FakeGuardImpl, registered for PrivateUse1) stands in for a second GPU,
// so the device guard is checked on a machine without one.

#include "../engine/torch_engine.h"

#include <ATen/ATen.h>
#include <c10/core/impl/FakeGuardImpl.h>
#include <gtest/gtest.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/script.h>

#include <cmath>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "../engine/engine_api.h"
#include "../engine/ood_gate.h"

namespace bertgate {
namespace {

namespace fs = std::filesystem;
using FakeDevice = c10::impl::FakeGuardImpl<c10::DeviceType::PrivateUse1>;
C10_REGISTER_GUARD_IMPL(PrivateUse1, FakeDevice);

InferInput Batch(int64_t rows, int64_t seq_len) {
  InferInput in;
  in.rows = rows;
  in.seq_len = seq_len;
  in.tokens.assign(3 * rows * seq_len, 0);
  for (int64_t i = 0; i < rows * seq_len; ++i) {
    in.tokens[i] = static_cast<int32_t>(i % 7);  // ids
    in.tokens[rows * seq_len + i] = 1;           // mask
  }
  in.top_k = 2;
  in.want_logits = true;
  return in;
}

// A model "on" fake device 3 with its own stream 5: it records which device and stream were
// current while it ran, and computes on the CPU.
class FakeDeviceModel : public Model {
 public:
  FakeDeviceModel() { info_.num_labels = 2; }
  ModelOutput Forward(const at::Tensor& ids, const at::Tensor& mask, const at::Tensor&) override {
    seen_device = FakeDevice::getDeviceIndex();
    seen_stream = FakeDevice::getCurrentStreamIdFor(3);
    return {at::stack({ids.sum(1), mask.sum(1)}, 1).to(at::kFloat), at::Tensor()};
  }
  const ModelInfo& info() const override { return info_; }
  const c10::Device& device() const override { return device_; }
  std::optional<c10::Stream> stream() const override { return c10::Stream(c10::Stream::UNSAFE, device_, 5); }

  c10::DeviceIndex seen_device = -1;
  c10::StreamId seen_stream = -1;

 private:
  ModelInfo info_;
  c10::Device device_{c10::DeviceType::PrivateUse1, 3};
};

TEST(TorchEngine, RunsEachBatchWithTheModelsDeviceAndStreamCurrent) {
  auto owned = std::make_unique<FakeDeviceModel>();
  FakeDeviceModel* model = owned.get();
  TorchEngine engine(std::move(owned));
  FakeDevice::setDeviceIndex(0);
  FakeDevice::resetStreams();

  auto pending = engine.Enqueue(Batch(2, 4));
  ASSERT_TRUE(pending.ok()) << pending.failure().message;
  EXPECT_EQ(model->seen_device, 3);
  EXPECT_EQ(model->seen_stream, 5);
  // ... and only for the call: the caller's device and stream are back afterwards.
  EXPECT_EQ(FakeDevice::getDeviceIndex(), 0);
  EXPECT_EQ(FakeDevice::getCurrentStreamIdFor(3), 0);
  auto out = engine.Complete(std::move(pending.value()));
  ASSERT_TRUE(out.ok()) << out.failure().message;
  EXPECT_EQ(out.value()->logits, (std::vector<float>{0 + 1 + 2 + 3, 4, 4 + 5 + 6 + 0, 4}));
}

class TorchEngineLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("bertgate-engine-load-test-" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Save(const std::string& name, const std::string& body, const std::string& returns = "Tensor") {
    torch::jit::Module m("Model");
    m.define("def forward(self, ids: Tensor, mask: Tensor, types: Tensor) -> " + returns + ":\n" + body);
    const std::string path = (dir_ / (name + ".pt")).string();
    m.save(path);
    return path;
  }

  static Outcome<std::unique_ptr<Engine>> Load(const std::string& path, int64_t warmup_rows = 0,
                                               int64_t warmup_seq_len = 0) {
    LoadOptions options;
    options.model_path = path;
    options.threads = 1;
    options.warmup_rows = warmup_rows;
    options.warmup_seq_len = warmup_seq_len;
    return bertgate_engine_library_v10()->Load(options);
  }

  fs::path dir_;
};

const char* kSums = "    return torch.stack([ids.sum(1).float(), mask.sum(1).float(), types.sum(1).float()], 1)\n";

TEST_F(TorchEngineLoadTest, ACpuBatchIsDoneWhenQueuedAndCompletesOnAnotherThread) {
  auto engine = Load(Save("sums", kSums));
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  auto pending = engine.value()->Enqueue(Batch(3, 5));
  ASSERT_TRUE(pending.ok()) << pending.failure().message;
  EXPECT_TRUE(pending.value()->done());
  std::shared_ptr<InferOutput> out;
  std::thread other([&] {
    auto completed = engine.value()->Complete(std::move(pending.value()));
    if (completed.ok()) out = completed.value();
  });
  other.join();
  ASSERT_NE(out, nullptr);
  auto whole = engine.value()->Infer(Batch(3, 5));
  ASSERT_TRUE(whole.ok()) << whole.failure().message;
  EXPECT_EQ(out->logits, whole.value()->logits);
  EXPECT_EQ(out->logits[0], 0 + 1 + 2 + 3 + 4);  // ids, mask and type ids came from one buffer
  EXPECT_EQ(out->logits[1], 5);
  EXPECT_EQ(out->logits[2], 0);
  EXPECT_GT(out->forward_ms, 0);
}

TEST_F(TorchEngineLoadTest, WarmsUpAtTheShapeItIsGiven) {
  const std::string path =
      Save("picky", "    assert not (ids.size(0) == 8 and ids.size(1) == 64), 'warm-up shape reached the model'\n" +
                        std::string(kSums));
  ASSERT_TRUE(Load(path).ok());  // the probe alone: [1, 2]
  auto warmed = Load(path, 8, 64);
  ASSERT_FALSE(warmed.ok());
  EXPECT_EQ(warmed.failure().code, ErrorCode::kModelLoad);
  EXPECT_NE(warmed.failure().message.find("[8, 64] (warm-up)"), std::string::npos) << warmed.failure().message;
  EXPECT_NE(warmed.failure().message.find("warm-up shape reached the model"), std::string::npos)
      << warmed.failure().message;
}

// A module returning {"logits", "features"} as the exporter's --features does: the features are
// (sum ids, sum mask, row index) so that the gate's score of each row can be worked out.
const char* kWithFeatures =
    "    f = torch.stack([ids.sum(1).float(), mask.sum(1).float(), torch.arange(ids.size(0)).float()], 1)\n"
    "    return {'logits': f[:, :2], 'features': f}\n";

// The features module with a gate of two directions: the first two features, one scaled by 2;
// centres (0, 0) and (10, 4).
LoadOptions WithGate(const std::string& model_path) {
  LoadOptions options;
  options.model_path = model_path;
  options.threads = 1;
  options.gate_dim = 2;
  options.gate_projection = {1, 0, 0, 0, 2, 0};
  options.gate_centres = {0, 0, 10, 4};
  return options;
}

TEST_F(TorchEngineLoadTest, ScoresEachRowWithTheGateInTheSamePass) {
  LoadOptions options = WithGate(Save("features", kWithFeatures, "Dict[str, Tensor]"));
  auto engine = bertgate_engine_library_v10()->Load(options);
  ASSERT_TRUE(engine.ok()) << engine.failure().message;
  EXPECT_EQ(engine.value()->info().feature_width, 3);
  InferInput in = Batch(2, 4);  // row sums 0+1+2+3 = 6 and 4+5+6+0 = 15; masks 4
  in.want_features = true;
  auto out = engine.value()->Infer(in);
  ASSERT_TRUE(out.ok()) << out.failure().message;
  // Row 0: z = (6, 8): to (0,0) 100, to (10,4) 32. Row 1: z = (15, 8): 289, 41.
  EXPECT_EQ(out.value()->ood_score, (std::vector<float>{32, 41}));
  EXPECT_EQ(out.value()->features, (std::vector<float>{6, 4, 0, 15, 4, 1}));
}

// CPU replicas: engines made by Replica() on other threads share the source's module and gate,
// run at the same time as it and as each other with the same answers, and keep the weights alive
// after the source is gone.
TEST_F(TorchEngineLoadTest, ReplicasShareTheModelRunConcurrentlyAndOutliveTheirSource) {
  LoadOptions options = WithGate(Save("features", kWithFeatures, "Dict[str, Tensor]"));
  auto loaded = bertgate_engine_library_v10()->Load(options);
  ASSERT_TRUE(loaded.ok()) << loaded.failure().message;
  std::unique_ptr<Engine> source = std::move(loaded.value());
  InferInput in = Batch(2, 4);
  in.want_features = true;
  auto expected = source->Infer(in);
  ASSERT_TRUE(expected.ok()) << expected.failure().message;

  constexpr int kReplicas = 3;
  constexpr int kRounds = 200;
  std::vector<std::unique_ptr<Engine>> replicas(kReplicas);
  std::vector<int> mismatches(kReplicas + 1, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < kReplicas; ++r) {
    threads.emplace_back([&, r] {
      auto made = source->Replica(1);  // on the thread that runs it, as the addon does
      if (!made.ok()) {
        mismatches[r] = -1;
        return;
      }
      replicas[r] = std::move(made.value());
      for (int i = 0; i < kRounds; ++i) {
        auto out = replicas[r]->Infer(in);
        if (!out.ok() || out.value()->logits != expected.value()->logits ||
            out.value()->ood_score != expected.value()->ood_score)
          ++mismatches[r];
      }
    });
  }
  for (int i = 0; i < kRounds; ++i) {  // the source keeps running beside them
    auto out = source->Infer(in);
    if (!out.ok() || out.value()->logits != expected.value()->logits) ++mismatches[kReplicas];
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r <= kReplicas; ++r) EXPECT_EQ(mismatches[r], 0) << "engine " << r;
  ASSERT_NE(replicas[0], nullptr);
  EXPECT_EQ(replicas[0]->info().feature_width, 3);

  source.reset();  // the replicas hold the model and the gate
  auto after = replicas[0]->Infer(in);
  ASSERT_TRUE(after.ok()) << after.failure().message;
  EXPECT_EQ(after.value()->ood_score, (std::vector<float>{32, 41}));
}

TEST_F(TorchEngineLoadTest, RefusesAGateForAModelWithoutFeaturesOrOfAnotherWidth) {
  LoadOptions options;
  options.model_path = Save("sums_only", kSums);
  options.threads = 1;
  options.gate_dim = 1;
  options.gate_projection = {1, 0, 0};
  options.gate_centres = {0};
  auto none = bertgate_engine_library_v10()->Load(options);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.failure().code, ErrorCode::kModelOutput);
  EXPECT_NE(none.failure().message.find("fitted on features 3 wide, but"), std::string::npos) << none.failure().message;
  EXPECT_NE(none.failure().message.find("returns no features"), std::string::npos) << none.failure().message;
  options.model_path = Save("features", kWithFeatures, "Dict[str, Tensor]");
  options.gate_projection = {1, 0, 0, 0};  // 4 wide
  auto other = bertgate_engine_library_v10()->Load(options);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.failure().message.find("returns 3-wide features"), std::string::npos) << other.failure().message;
}

TEST(OodGate, GivesARowWithNaNFeaturesANaNScore) {
  const OodGate gate({1, 0, 0, 1}, {0, 0}, 2, c10::Device(c10::kCPU));
  const at::Tensor features = at::tensor({3.0f, 4.0f, NAN, 1.0f}).reshape({2, 2});
  const at::Tensor scores = gate.Scores(features);
  EXPECT_FLOAT_EQ(scores[0].item<float>(), 25.0f);
  EXPECT_TRUE(std::isnan(scores[1].item<float>()));
}

TEST_F(TorchEngineLoadTest, ALoadSetsTheFuserToDynamicShapes) {
  ASSERT_TRUE(Load(Save("sums", kSums)).ok());
  const torch::jit::FusionStrategy strategy = torch::jit::getFusionStrategy();
  ASSERT_EQ(strategy.size(), 1u);
  EXPECT_EQ(strategy[0].first, torch::jit::FusionBehavior::DYNAMIC);
}

}  // namespace
}  // namespace bertgate
