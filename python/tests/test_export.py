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
    """--quantize int8: per-channel int8 weights, 8-bit activations (reduce_range false in every
    int8 call of the file), the pooler, the classifier and the first layer's FFN down-projection
    left in float and named in bundle.json, and the file reproducing the recipe's eager model."""
    from bertgate_export.quantize import SCHEME, int8_layers, quantize_int8

    manifest = export_bundle(model_dir, tmp_path / "int8", quantize="int8")
    q = manifest["quantization"]
    assert q["scheme"] == SCHEME and q["layers"] == "Linear"
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    quantized, kept = int8_layers(eager)
    assert q["float_layers"] == kept
    assert kept == ["bert.encoder.layer.0.output.dense", "bert.pooler.dense", "classifier"]
    assert "bert.encoder.layer.1.output.dense" in quantized  # a later layer's is not kept
    assert "bert.encoder.layer.0.attention.output.dense" in quantized

    loaded = torch.jit.load(str(tmp_path / "int8" / "model.pt"))
    graph = loaded.inlined_graph  # held: its nodes die with it
    calls = graph.findAllNodes("quantized::linear_dynamic", recurse=True)
    assert len(calls) == len(quantized)
    # reduce_range false: activations quantized to 8 bits (torch.ao's default is 7).
    assert all(call.inputsAt(2).toIValue() is False for call in calls)
    # The file reproduces the recipe's eager model, whose weights are per output channel.
    reference = quantize_int8(eager)
    layer = dict(reference.named_modules())[quantized[0]]
    assert layer._packed_params._packed_params.unpack()[0].qscheme() == torch.per_channel_affine
    ids, mask, types = random_batch(torch.Generator().manual_seed(4), 3, 17, eager.config.vocab_size, 2)
    with torch.no_grad():
        got = loaded(ids, mask, types)["logits"]
        want = reference(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
    assert (got - want).abs().max().item() <= 1e-5


def test_int8_fast_quantizes_every_encoder_layer(model_dir, tmp_path):
    """--quantize int8-fast: only the pooler and classifier stay float; an unknown recipe is refused."""
    manifest = export_bundle(model_dir, tmp_path / "fast", quantize="int8-fast")
    assert manifest["quantization"]["recipe"] == "int8-fast"
    assert manifest["quantization"]["float_layers"] == ["bert.pooler.dense", "classifier"]
    loaded = torch.jit.load(str(tmp_path / "fast" / "model.pt"))
    graph = loaded.inlined_graph
    eager = BertForSequenceClassification.from_pretrained(model_dir).eval()
    linears = [n for n, m in eager.named_modules() if isinstance(m, torch.nn.Linear)]
    assert len(graph.findAllNodes("quantized::linear_dynamic", recurse=True)) == len(linears) - 2
    with pytest.raises(ExportError, match="quantize must be one of int8, int8-fast"):
        export_bundle(model_dir, tmp_path / "int4", quantize="int4")
