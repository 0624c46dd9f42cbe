"""Test fixtures: small random-weight bundles exported with the real tool, and for each, the
Python reference (HF tokenizer ids and transformers eager logits, one text at a time) that
the Node tests must reproduce.

    python -m bertgate_export.fixtures OUT_DIR
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast, pipeline

from . import int8_linear, tokenizer_corpus
from .export import export_bundle, file_digests, max_length_of, save_torchscript, trace
from .legacy_int8 import legacy_record, quantize_int8_legacy, quantized_engine
from .quantize import quantize_int8
from .testmodels import ModelSpec, build_model_dir, corpus_lines, train_wordpiece

SPECS: dict[str, ModelSpec] = {
    "labels2": ModelSpec(labels=["negative", "positive"], hidden=32, heads=2, max_positions=64, seed=1),
    "labels7": ModelSpec(
        labels=["admin", "devel", "games", "graphics", "net", "sound", "text"],
        hidden=48,
        heads=4,
        max_positions=96,
        lowercase=False,
        seed=2,
    ),
    "labels50": ModelSpec(
        labels=[f"section_{i:02d}" for i in range(50)], hidden=64, heads=4, max_positions=128, seed=3
    ),
    # Big enough that one batch takes a noticeable time on a CPU: the event-loop test.
    "long": ModelSpec(labels=["a", "b"], hidden=128, heads=4, layers=2, max_positions=512, vocab_size=2000, seed=4),
}

# bundle.json's "created" in every fixture.
FIXED_TIME = "2026-01-01T00:00:00+00:00"
# Also exported with int8 Linear layers, beside the float bundle of the same weights: by today's
# exporter (bertgate::linear_int8) and as the torch.ao exporter before it did ("-int8-legacy").
INT8 = ("labels50",)
# Also exported with its pooled features (bundle format 2), for the out-of-distribution gate.
FEATURES = ("labels7",)

SPECIAL_TEXTS = [
    "",
    "   ",
    "Hello",
    "THE QUICK Brown fox",
    "Café naïve résumé Zürich Ångström",
    "İstanbul ILIK ılık Iğdır IŞIK",
    "パッケージ管理ツール 用于管理软件包 패키지",
    "ship it 🚀🎉 👍🏽 🇩🇪",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "bell\x07 tab\t newline\n carriage\r end",
    "word " * 3000,
]


def parity_texts(max_positions: int) -> list[str]:
    """Texts whose token counts run from 2 ([CLS] [SEP]) past the maximum (truncated)."""
    words = " ".join(corpus_lines()).split()
    step = max(1, max_positions // 24)
    prefixes = [" ".join(words[:n]) for n in range(1, max_positions + 12, step)]
    return SPECIAL_TEXTS + prefixes


def pair_logits(tokenizer, model, pairs: list[list[str]], max_length: int) -> list[list[float]]:
    """Sentence-pair inputs: token type ids 1 on the second text."""
    out = []
    with torch.no_grad():
        for first, second in pairs:
            enc = tokenizer(first, second, truncation=True, max_length=max_length, return_tensors="pt")
            logits = model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=enc["token_type_ids"],
            ).logits
            out.append(logits[0].tolist())
    return out


def reference(model_dir: Path, bundle_dir: Path, texts: list[str], quantize=None) -> dict:
    """quantize: quantize_int8 or quantize_int8_legacy; the reference is then that int8 eager
    model (what an int8 bundle must reproduce), not the float one."""
    tokenizer = AutoTokenizer.from_pretrained(bundle_dir)
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    if quantize is not None:
        model = quantize(model)
    max_length = tokenizer.model_max_length
    pairs = [[texts[i], texts[-1 - i]] for i in range(0, len(texts), 3)]
    ids, logits, truncated = [], [], []
    with torch.no_grad():
        for text in texts:
            full = tokenizer(text)["input_ids"]
            enc = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
            out = model(
                input_ids=enc["input_ids"],
                attention_mask=enc["attention_mask"],
                token_type_ids=torch.zeros_like(enc["input_ids"]),
            ).logits
            ids.append(enc["input_ids"][0].tolist())
            logits.append(out[0].tolist())
            truncated.append(len(full) > max_length)
    return {
        "texts": texts,
        "input_ids": ids,
        "logits": logits,
        "truncated": truncated,
        "max_length": max_length,
        "pairs": pairs,
        "pair_logits": pair_logits(tokenizer, model, pairs, max_length),
    }


class NanOnUnknown(torch.nn.Module):
    """Wraps a traced model: NaN logits for any text holding [UNK], plain-tensor output."""

    def __init__(self, inner: torch.jit.ScriptModule, unk_id: int):
        super().__init__()
        self.inner = inner
        self.unk_id = unk_id

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        logits = self.inner(ids, mask, types)["logits"]
        bad = (ids == self.unk_id).any(dim=1, keepdim=True)
        return torch.where(bad, torch.full_like(logits, float("nan")), logits)


class RaiseOnUnknown(torch.nn.Module):
    """Wraps a traced model: a batch holding [UNK] anywhere raises, as a model that cannot run
    one of its inputs does (the replicas' batch-fault split is tested with it)."""

    def __init__(self, inner: torch.jit.ScriptModule, unk_id: int):
        super().__init__()
        self.inner = inner
        self.unk_id = unk_id

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        if bool((ids == self.unk_id).any()):
            raise RuntimeError("this model cannot run a text holding [UNK]")
        return self.inner(ids, mask, types)["logits"]


class ComputedInt8Weight(torch.nn.Module):
    """Wraps a traced model: its logits through bertgate::linear_int8 with a weight the graph
    computes (int16 127s cast to int8), which no load-time look at stored weights could vet."""

    def __init__(self, inner: torch.jit.ScriptModule, unk_id: int):
        super().__init__()
        self.inner = inner
        self.register_buffer("wide", torch.full((50, 50), 127, dtype=torch.int16))
        self.register_buffer("scale", torch.full((50,), 0.01))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        logits = self.inner(ids, mask, types)["logits"]
        return torch.ops.bertgate.linear_int8(logits, self.wide.to(torch.int8), self.scale, None, 0)


class ForkedComputedInt8Weight(ComputedInt8Weight):
    """ComputedInt8Weight with its int8 layer in a torch.jit.fork task: the load's checks must
    read a forked task's graph as they read forward's."""

    def tail(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.ops.bertgate.linear_int8(logits, self.wide.to(torch.int8), self.scale, None, 0)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        logits = self.inner(ids, mask, types)["logits"]
        return torch.jit.wait(torch.jit.fork(self.tail, logits))


class _Int8Writer(torch.nn.Module):
    """A submodule holding a tensor it writes through .data (which bumps no version counter)."""

    def __init__(self, tensor: torch.Tensor):
        super().__init__()
        self.register_buffer("tensor", tensor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.tensor.data.add_(1)
        return x


class AliasedInt8Weight(torch.nn.Module):
    """Wraps a traced model: its logits through bertgate::linear_int8 on a stored weight whose
    tensor another submodule also holds, and writes through .data before each call. Freezing
    inlines the weight (the writer's attribute is another module's) as a constant over the
    memory the writer still writes: the engine must give the layer a copy of its own, fixed at
    load, or an AMX packing of it would go stale."""

    def __init__(self, inner: torch.jit.ScriptModule, unk_id: int):
        super().__init__()
        self.inner = inner
        g = torch.Generator().manual_seed(9)
        weight = torch.randint(-8, 9, (50, 50), generator=g, dtype=torch.int8)
        self.register_buffer("weight", weight)
        self.register_buffer("scale", torch.full((50,), 0.01))
        self.writer = _Int8Writer(weight)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        logits = self.writer(self.inner(ids, mask, types)["logits"])
        return torch.ops.bertgate.linear_int8(logits, self.weight, self.scale, None, 0)


@torch.jit.script
class _Int8Layer:
    """An int8 layer kept in a TorchScript class object, not a module."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor):
        self.weight = weight
        self.scale = scale

    def run(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.bertgate.linear_int8(x, self.weight, self.scale, None, 0)


class ClassMethodInt8Weight(torch.nn.Module):
    """Wraps a traced model: its logits through bertgate::linear_int8 called in a method of a
    TorchScript class object, on weights at 127 levels: the load must read a class's methods as
    it reads a module's, frozen (inlined) or not."""

    def __init__(self, inner: torch.jit.ScriptModule, unk_id: int):
        super().__init__()
        self.inner = inner
        self.layer = _Int8Layer(torch.full((50, 50), 127, dtype=torch.int8), torch.full((50,), 0.0001))

    def forward(self, ids: torch.Tensor, mask: torch.Tensor, types: torch.Tensor) -> torch.Tensor:
        return self.layer.run(self.inner(ids, mask, types)["logits"])


def build_wrapped_bundle(source: Path, out: Path, wrapper: type[torch.nn.Module]) -> None:
    """The source bundle with its model wrapped by `wrapper(model, unk_id)`."""
    shutil.copytree(source, out, dirs_exist_ok=True)
    unk = AutoTokenizer.from_pretrained(source).unk_token_id
    save_torchscript(torch.jit.script(wrapper(torch.jit.load(str(source / "model.pt")), unk)), out / "model.pt")
    # A new model.pt: seal it again, as the exporter would have.
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["files"] = file_digests(out)
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")


def build_wide_int8(model_dir: Path, out: Path) -> None:
    """An int8 bundle with weights at 127 levels whose bundle.json claims 64, as a hand-made
    bundle might: what the engine itself must refuse, since its integer matmul sums such weights
    exactly only on CPUs with VNNI."""
    levels = int8_linear.WEIGHT_LEVELS
    int8_linear.WEIGHT_LEVELS = 127
    try:
        export_fixture(model_dir, out, quantize="int8")
    finally:
        int8_linear.WEIGHT_LEVELS = levels
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["quantization"]["weight_levels"] = levels
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"fixtures: {out.name} (int8 weights at 127 levels, which the engine refuses)")


def build_legacy_int8(model_dir: Path, float_bundle: Path, out: Path) -> None:
    """The float bundle with its model.pt and "quantization" record as the torch.ao exporter
    wrote them: quantized:: layers, which bertgate must keep loading."""
    shutil.copytree(float_bundle, out, dirs_exist_ok=True)
    torch.backends.quantized.engine = quantized_engine()
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    length = max_length_of(model.config, AutoTokenizer.from_pretrained(float_bundle), None)
    save_torchscript(trace(quantize_int8_legacy(model), length), out / "model.pt")
    manifest = json.loads((out / "bundle.json").read_text())
    manifest["quantization"] = legacy_record(model, torch.backends.quantized.engine)
    manifest["files"] = file_digests(out)
    (out / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")


# A model as a user would bring one to `bertgate export`: save_pretrained output, 50 labels, a
# cased WordPiece tokenizer trained with Turkish text (dotted and dotless i kept apart).
USER_TEXTS = [
    "İstanbul'da ılık bir akşam, Boğaziçi'nde vapur",
    "ISPARTA IĞDIR İZMİR DİYARBAKIR",
    "Paket yöneticisi için komut satırı aracı",
    "Kütüphane ve geliştirme başlık dosyaları",
    "A fast web server with TLS support",
    "",
]


def build_user_model(out: Path) -> None:
    """out/turkish50-hf (an HF model directory) and out/turkish50.pipeline.json: the
    transformers pipeline's probabilities for USER_TEXTS, every label, in id2label order."""
    model_dir = out / "turkish50-hf"
    extra = [line for line in tokenizer_corpus.TURKISH for _ in range(3)] + USER_TEXTS
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_wordpiece(1500, lowercase=False, extra_lines=extra),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    labels = [f"kategori_{i:02d}" for i in range(50)]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=192,
        max_position_embeddings=64,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(5)
    model = BertForSequenceClassification(config).eval()
    # Random weights give nearly uniform probabilities; a sharper head makes any difference in
    # tokens or logits show in the probabilities compared.
    with torch.no_grad():
        model.classifier.weight.mul_(200)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    classify = pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu")
    probabilities = []
    for text in USER_TEXTS:
        scores = {item["label"]: item["score"] for item in classify([text])[0]}
        probabilities.append([scores[label] for label in labels])
    (out / "turkish50.pipeline.json").write_text(
        json.dumps({"texts": USER_TEXTS, "labels": labels, "probabilities": probabilities})
    )
    print(f"fixtures: turkish50-hf ({len(labels)} labels, pipeline probabilities for {len(USER_TEXTS)} texts)")


def export_fixture(model_dir: Path, bundle: Path, **options) -> None:
    """export_bundle, with the two manifest fields that would differ between runs and clones
    (the time, the temporary model directory) pinned: bundle.json is not sealed."""
    export_bundle(model_dir, bundle, random_weights=True, **options)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["created"] = FIXED_TIME
    manifest["source"] = f"bertgate_export.fixtures {model_dir.name}"
    (bundle / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")


def build(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in SPECS.items():
            model_dir = build_model_dir(spec, Path(tmp) / name)
            bundle = out / name
            export_fixture(model_dir, bundle)
            expected = reference(model_dir, bundle, parity_texts(spec.max_positions))
            (out / f"{name}.expected.json").write_text(json.dumps(expected))
            print(f"fixtures: {name} ({len(spec.labels)} labels, {len(expected['texts'])} reference texts)")
            if name in FEATURES:
                export_fixture(model_dir, out / f"{name}-features", features=True)
                print(f"fixtures: {name}-features (format 2: the pooled features beside the logits)")
            if name in INT8:
                texts = parity_texts(spec.max_positions)
                export_fixture(model_dir, out / f"{name}-int8", quantize="int8")
                expected = reference(model_dir, out / f"{name}-int8", texts, quantize=quantize_int8)
                (out / f"{name}-int8.expected.json").write_text(json.dumps(expected))
                print(f"fixtures: {name}-int8 (the int8 recipe of quantize.py, the int8 eager reference)")
                build_wide_int8(model_dir, out / f"{name}-int8-wide")
                build_legacy_int8(model_dir, bundle, out / f"{name}-int8-legacy")
                expected = reference(model_dir, out / f"{name}-int8-legacy", texts, quantize=quantize_int8_legacy)
                # The engine runs this bundle with 7-bit activations where the CPU lacks AVX-512
                # VNNI (it decides; the test reads which from the classifier): that eager model too.
                seven = functools.partial(quantize_int8_legacy, reduce_range=True)
                legacy_7bit = reference(model_dir, out / f"{name}-int8-legacy", texts, quantize=seven)
                expected["logits_7bit"] = legacy_7bit["logits"]
                (out / f"{name}-int8-legacy.expected.json").write_text(json.dumps(expected))
                print(f"fixtures: {name}-int8-legacy (torch.ao dynamic int8, as exported before bertgate::linear_int8)")
        # One token type (no row for a pair's second text): the engine must refuse pairs up front.
        spec = ModelSpec(labels=["a", "b"], hidden=32, heads=2, max_positions=64, seed=5, extra={"type_vocab_size": 1})
        export_fixture(build_model_dir(spec, Path(tmp) / "onetype"), out / "onetype")
        print("fixtures: onetype (type_vocab_size 1)")
    build_wrapped_bundle(out / "labels2", out / "nan", NanOnUnknown)
    build_wrapped_bundle(out / "labels2", out / "poison", RaiseOnUnknown)
    build_wrapped_bundle(out / "labels50", out / "labels50-int8-computed", ComputedInt8Weight)
    build_wrapped_bundle(out / "labels50", out / "labels50-int8-forked", ForkedComputedInt8Weight)
    build_wrapped_bundle(out / "labels50-int8", out / "labels50-int8-aliased", AliasedInt8Weight)
    build_wrapped_bundle(out / "labels50", out / "labels50-int8-classmethod", ClassMethodInt8Weight)
    tokenizer_corpus.build(out / "tokenizers")
    build_user_model(out)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
