"""The export tool: what it writes, and that its parity check can fail."""

import hashlib
import json

import pytest
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from bertgate_export.__main__ import main
from bertgate_export.export import ExportError, check_parity, export_bundle, random_batch, trace
from bertgate_export.testmodels import ModelSpec, build_model_dir


def test_writes_a_complete_bundle(model_dir, tmp_path):
    manifest = export_bundle(model_dir, tmp_path / "bundle", max_length=40)
    files = {p.name for p in (tmp_path / "bundle").iterdir()}
    assert {"model.pt", "config.json", "tokenizer.json", "tokenizer_config.json", "bundle.json"} <= files
    assert manifest["max_length"] == 40
    assert manifest["num_labels"] == 3
    assert manifest["parity"]["max_abs_diff"] <= 1e-5
    assert manifest["random_weights"] is False
    assert json.loads((tmp_path / "bundle" / "bundle.json").read_text()) == manifest
    config = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert config["id2label"] == {"0": "a", "1": "b", "2": "c"}
    assert AutoTokenizer.from_pretrained(tmp_path / "bundle").model_max_length == 40


def test_seals_the_files_it_wrote(model_dir, tmp_path):
    manifest = export_bundle(model_dir, tmp_path / "bundle", max_length=40)
    sealed = manifest["files"]
    assert set(sealed) == {"model.pt", "config.json", "tokenizer.json", "tokenizer_config.json"}
    for name, entry in sealed.items():
        data = (tmp_path / "bundle" / name).read_bytes()
        assert entry == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def test_saved_trace_matches_eager_on_new_shapes(model_dir, tmp_path):
    export_bundle(model_dir, tmp_path / "bundle")
    traced = torch.jit.load(str(tmp_path / "bundle" / "model.pt"))
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    generator = torch.Generator().manual_seed(123)
    ids, mask, types = random_batch(generator, 7, 29, eager.config.vocab_size, 2)
    with torch.no_grad():
        got = traced(ids, mask, types)["logits"]
        want = eager(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert (got - want).abs().max().item() <= 1e-5


def test_parity_check_catches_a_wrong_trace(model_dir, tmp_path):
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    other_spec = ModelSpec(labels=["a", "b", "c"], hidden=32, heads=2, max_positions=48, seed=12)
    other = BertForSequenceClassification.from_pretrained(build_model_dir(other_spec, tmp_path / "other")).eval()
    other.resize_token_embeddings(eager.config.vocab_size)
    with pytest.raises(ExportError, match="trace differs from eager by"):
        check_parity(eager, trace(other, 48), 48, 1e-5)


def test_rejects_a_single_label_model(tmp_path):
    spec = ModelSpec(labels=["only"], hidden=32, heads=2, max_positions=16)
    with pytest.raises(ExportError, match="num_labels is 1"):
        export_bundle(build_model_dir(spec, tmp_path / "hf"), tmp_path / "bundle")


def test_command_line(model_dir, tmp_path, capsys):
    assert main([str(model_dir), str(tmp_path / "bundle"), "--max-length", "32"]) == 0
    assert json.loads(capsys.readouterr().out)["max_length"] == 32


def test_float16_weights_halve_the_file_and_keep_parity(model_dir, tmp_path):
    full = export_bundle(model_dir, tmp_path / "fp32")
    half = export_bundle(model_dir, tmp_path / "fp16", weights="float16")
    assert half["weights"] == "float16" and full["weights"] == "float32"
    size32 = (tmp_path / "fp32" / "model.pt").stat().st_size
    size16 = (tmp_path / "fp16" / "model.pt").stat().st_size
    assert size16 < 0.8 * size32, (size16, size32)  # a tiny model: the code in the archive weighs too
    assert half["parity"]["max_abs_diff"] <= 1e-5
    loaded = torch.jit.load(str(tmp_path / "fp16" / "model.pt"))
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    assert {b.dtype for b in loaded.buffers()} == {torch.int64}


def test_refuses_a_checkpoint_without_a_classification_head(model_dir, tmp_path):
    # A BertModel saved beside the same tokenizer: transformers would make up the head at random.
    headless = tmp_path / "headless"
    BertForSequenceClassification.from_pretrained(model_dir).bert.save_pretrained(headless)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (headless / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(
        ExportError, match=r"lacks weights the classifier needs \(classifier\.bias, classifier\.weight\)"
    ):
        export_bundle(headless, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_refuses_a_model_directory_without_a_tokenizer(model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in model_dir.iterdir():
        if not path.name.startswith(("tokenizer", "vocab", "special_tokens")):
            (bare / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ExportError, match=r"has no tokenizer \(tokenizer\.json or vocab\.txt\)"):
        export_bundle(bare, tmp_path / "bundle")


def test_refuses_another_architecture_and_a_directory_without_config(model_dir, tmp_path):
    other = tmp_path / "distil"
    other.mkdir()
    config = json.loads((model_dir / "config.json").read_text())
    config["model_type"] = "distilbert"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="holds a 'distilbert' model; bertgate exports BertForSequenceClassification"):
        export_bundle(other, tmp_path / "bundle")
    with pytest.raises(ExportError, match="has no config.json"):
        export_bundle(tmp_path / "nothing-here", tmp_path / "bundle")


def test_features_come_out_beside_the_logits_as_the_pooler_gives_them(model_dir, tmp_path):
    manifest = export_bundle(model_dir, tmp_path / "bundle", features=True)
    assert manifest["format"] == 2
    assert manifest["outputs"] == {"logits": 3, "features": 32}
    traced = torch.jit.load(str(tmp_path / "bundle" / "model.pt"))
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    ids, mask, types = random_batch(torch.Generator().manual_seed(5), 4, 17, eager.config.vocab_size, 2)
    with torch.no_grad():
        out = traced(ids, mask, types)
        assert (
            out["logits"] - eager(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
        ).abs().max() <= 1e-5
        pooled = eager.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)[1]
        assert (out["features"] - pooled).abs().max() <= 1e-5


def test_pooler_and_mean_features_are_the_pooled_vector_beside_the_mean_of_the_real_tokens(model_dir, tmp_path):
    manifest = export_bundle(model_dir, tmp_path / "bundle", features="pooler+mean")
    assert manifest["format"] == 2
    assert manifest["outputs"] == {"logits": 3, "features": 64}
    assert manifest["features"] == "pooler+mean"
    traced = torch.jit.load(str(tmp_path / "bundle" / "model.pt"))
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    ids, mask, types = random_batch(torch.Generator().manual_seed(6), 4, 19, eager.config.vocab_size, 2)
    mask[0, 5:] = 0  # padding: a padded token must not move the mean
    mask[1, 1:] = 0  # [CLS] alone
    with torch.no_grad():
        out = traced(ids, mask, types)
        hidden, pooled = eager.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)[:2]
        for row in range(4):
            real = mask[row].bool()
            want = torch.cat([pooled[row], hidden[row][real].mean(0)])
            assert (out["features"][row] - want).abs().max() <= 1e-5
        # The padding's hidden states themselves are not zero: only the mask keeps them out.
        assert hidden[0, 5:].abs().max() > 0


def test_a_layers_mean_features_are_the_mean_of_that_hidden_state_over_the_real_tokens(model_dir, tmp_path):
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    layer = eager.config.num_hidden_layers - 1  # not the last: hidden_states[-1] would hide an off-by-one
    manifest = export_bundle(model_dir, tmp_path / "bundle", features=f"mean:{layer}")
    assert manifest["outputs"] == {"logits": 3, "features": 32}
    assert manifest["features"] == f"mean:{layer}"
    traced = torch.jit.load(str(tmp_path / "bundle" / "model.pt"))
    ids, mask, types = random_batch(torch.Generator().manual_seed(7), 3, 13, eager.config.vocab_size, 2)
    mask[0, 4:] = 0
    with torch.no_grad():
        out = traced(ids, mask, types)
        states = eager.bert(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        assert (out["logits"] - eager.classifier(states.pooler_output)).abs().max() <= 1e-5
        for row in range(3):
            want = states.hidden_states[layer][row][mask[row].bool()].mean(0)
            assert (out["features"][row] - want).abs().max() <= 1e-5
            # Another layer's mean is another vector: the test would see the wrong K.
            assert (
                out["features"][row] - states.hidden_states[layer + 1][row][mask[row].bool()].mean(0)
            ).abs().max() > 1e-3


def test_refuses_a_feature_kind_it_does_not_know(model_dir, tmp_path):
    for kind in ("cls", "", "mean", "mean:-1", "mean:01", "mean:1.5"):
        with pytest.raises(ExportError, match="features must be pooler, pooler\\+mean or mean:K"):
            export_bundle(model_dir, tmp_path / "bundle", features=kind)
    # A layer the model does not have is named with the count it has.
    with pytest.raises(ExportError, match=r"features mean:9: .* has 2 layers \(mean:0 is the embeddings, mean:2"):
        export_bundle(model_dir, tmp_path / "bundle", features="mean:9")
    assert not (tmp_path / "bundle").exists()


def test_unbundle_recovers_the_model_a_bundle_holds(model_dir, tmp_path):
    from bertgate_export.unbundle import unbundle

    export_bundle(model_dir, tmp_path / "bundle", weights="float16")
    assert unbundle(tmp_path / "bundle", tmp_path / "hf") == 0.0
    # Exported again with its features: the same logits as the first bundle.
    export_bundle(tmp_path / "hf", tmp_path / "again", weights="float16", features=True)
    first = torch.jit.load(str(tmp_path / "bundle" / "model.pt")).float()
    again = torch.jit.load(str(tmp_path / "again" / "model.pt")).float()
    ids, mask, types = random_batch(
        torch.Generator().manual_seed(9), 3, 11, first.bert.embeddings.word_embeddings.weight.shape[0], 2
    )
    with torch.no_grad():
        assert (first(ids, mask, types)["logits"] - again(ids, mask, types)["logits"]).abs().max() == 0.0
    # A non-empty output and an int8 bundle are refused.
    with pytest.raises(ExportError, match="is not empty"):
        unbundle(tmp_path / "bundle", tmp_path / "hf")
    export_bundle(model_dir, tmp_path / "int8", quantize="int8")
    with pytest.raises(ExportError, match="int8 bundle"):
        unbundle(tmp_path / "int8", tmp_path / "hf8")


def test_int8_export_follows_the_recipe(model_dir, tmp_path):
    """--quantize int8: every encoder Linear a bertgate::linear_int8 call, the FFN's GELU fused
    into its up-projection, weights int8 in [-64, 64] with a scale per output channel, the pooler
    and the classifier float and named in bundle.json, no quantized:: operator left, and the
    file reproducing the recipe's eager model; an unknown recipe is refused."""
    from bertgate_export.int8_linear import OP, WEIGHT_LEVELS
    from bertgate_export.quantize import SCHEME, int8_layers, quantize_int8

    manifest = export_bundle(model_dir, tmp_path / "int8", quantize="int8")
    q = manifest["quantization"]
    assert q["scheme"] == SCHEME and q["layers"] == "Linear" and q["op"] == OP
    assert q["weight_levels"] == WEIGHT_LEVELS == 64 and q["fused_gelu"] is True
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    quantized, kept = int8_layers(eager)
    assert q["float_layers"] == kept == ["bert.pooler.dense", "classifier"]
    assert "bert.encoder.layer.0.output.dense" in quantized

    loaded = torch.jit.load(str(tmp_path / "int8" / "model.pt"))
    graph = loaded.inlined_graph  # held: its nodes die with it
    calls = graph.findAllNodes(OP, recurse=True)
    assert len(calls) == len(quantized)
    assert not [n for n in graph.nodes() if n.kind().startswith("quantized::")]
    # One GELU per layer, carried by the up-projection's call (activation 1), none left apart.
    assert sum(call.inputsAt(4).toIValue() == 1 for call in calls) == eager.config.num_hidden_layers
    assert not graph.findAllNodes("aten::gelu", recurse=True)
    weights = [t for name, t in loaded.named_buffers() if name.endswith(".weight") and t.dtype == torch.int8]
    assert len(weights) == len(quantized)
    assert max(int(t.abs().max()) for t in weights) == WEIGHT_LEVELS  # each channel's largest is +-64
    reference = quantize_int8(eager)
    ids, mask, types = random_batch(torch.Generator().manual_seed(4), 3, 17, eager.config.vocab_size, 2)
    with torch.no_grad():
        got = loaded(ids, mask, types)["logits"]
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert (got - want).abs().max().item() == 0.0
    with pytest.raises(ExportError, match="quantize must be one of int8 "):
        export_bundle(model_dir, tmp_path / "int4", quantize="int8-fast")


def test_int8_reference_numerics():
    """The operator's reference, piece by piece, against exact arithmetic: rows quantized alone
    (a row's output does not depend on its batch-mates), the int32 sums exact, the erf GELU
    within 2e-6 of torch's, empty batches and a missing bias handled."""
    from bertgate_export.int8_linear import gelu, linear_int8_reference, quantize_weight

    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 5, 40, generator=g) * torch.logspace(-3, 2, 7)[:, None, None]
    w, ws = quantize_weight(torch.randn(24, 40, generator=g))
    assert int(w.abs().max()) == 64 and w.dtype == torch.int8
    bias = torch.randn(24, generator=g)
    out = linear_int8_reference(x, w, ws, bias, 0)
    assert out.shape == (7, 5, 24) and out.dtype == torch.float32
    # Exact: quantize each row in float64 the same way, sum in int64.
    rows = x.reshape(-1, 40)
    scale = (rows.abs().amax(1, keepdim=True) / 127).float()
    q = torch.round((rows * (1.0 / scale)).clamp(-127, 127)).to(torch.int64)
    exact = (q @ w.t().to(torch.int64)).float() * scale * ws + bias
    assert torch.equal(out.reshape(-1, 24), exact)
    # A row alone gives the bits it gives in a batch.
    for i in (0, 3, 6):
        assert torch.equal(linear_int8_reference(x[i, 2:3], w, ws, bias, 0), out[i, 2:3])
    # A zero row, or one whose scale would not be a normal float, quantizes with scale 1: its
    # output is the bias (1 / scale stays finite).
    for tiny in (0.0, 1e-40, -1e-37):
        assert torch.equal(linear_int8_reference(torch.full((1, 40), tiny), w, ws, bias, 0)[0], bias)
    assert torch.equal(linear_int8_reference(x, w, ws, None, 0), linear_int8_reference(x, w, ws, torch.zeros(24), 0))
    assert linear_int8_reference(torch.zeros(0, 40), w, ws, bias, 1).shape == (0, 24)
    # A row holding NaN or inf gives a NaN row (as the engine's), and leaves the others alone.
    poisoned = x[0].clone()
    poisoned[1, 5], poisoned[3, 0] = float("nan"), float("-inf")
    got = linear_int8_reference(poisoned, w, ws, bias, 0)
    assert got[1].isnan().all() and got[3].isnan().all()
    assert torch.equal(got[[0, 2, 4]], out[0, [0, 2, 4]])
    # One input feature: [N, 1].t() has ambiguous strides, which _int_mm once read wrongly.
    for n in (1, 7, 300):
        w1 = torch.randint(-64, 65, (n, 1), generator=g, dtype=torch.int8)
        x1 = torch.randn(5, 1, generator=g)
        s1 = x1.abs() / 127
        q1 = torch.round(x1 / s1).to(torch.int64)
        want = (q1 @ w1.t().to(torch.int64)).float() * s1 * torch.ones(n)
        assert torch.allclose(linear_int8_reference(x1, w1, torch.ones(n), None, 0), want, rtol=1e-6, atol=0)
    v = torch.linspace(-12, 12, 20001)
    assert (gelu(v) - torch.nn.functional.gelu(v)).abs().max().item() < 2e-6
    assert torch.equal(linear_int8_reference(x, w, ws, bias, 1), gelu(out))
