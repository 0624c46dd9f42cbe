"""Hugging Face model directory -> bertgate bundle.

Traces BertForSequenceClassification to TorchScript with the pinned transformers, checks the
saved trace against the eager model on random inputs of many shapes (not just the traced
one), and writes model.pt, config.json, tokenizer.json (+ tokenizer_config.json) and
bundle.json (provenance and the parity figures).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import math
import os
import re
import secrets
import shutil
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import transformers
from transformers import AutoConfig, AutoTokenizer, BertForSequenceClassification

from . import __version__
from .quantize import RECIPES, manifest_record, quantize_int8

# Bundle layout version, written to bundle.json: 2 when model.pt also returns the pooled
# features (a dict {"logits", "features"}), which bertgate's out-of-distribution gate reads;
# format-1 bundles (logits alone) load as before.
BUNDLE_FORMAT = 1
BUNDLE_FORMAT_WITH_FEATURES = 2


# What the gate's features are: "pooler", the pooled [CLS] vector the classification head reads;
# "pooler+mean", that vector beside the mean of the last layer's hidden states over the text's
# tokens (what all-MiniLM-L6-v2, the default's encoder, was trained to produce), one vector of
# twice the width; "mean:K", the mean over the text's tokens of hidden state K alone (0 the
# embeddings, the layer count the last layer): on the 4-layer candidate the third layer's mean
# ranked first on the two train-only proxies, where the pooled vector of a model trained 12
# epochs had stopped placing other text away from the class centres (docs/evaluation.md, "A
# candidate trained on the CPU"). Chosen on proxies that use no evaluation set.
FEATURE_KINDS = ("pooler", "pooler+mean", "mean:K")


def feature_layer(kind: str) -> int | None:
    """K of a "mean:K" kind, or None for the others; ExportError for a kind that is none of them."""
    if kind in ("pooler", "pooler+mean"):
        return None
    m = re.fullmatch(r"mean:(0|[1-9][0-9]{0,2})", kind)
    if m is None:
        raise ExportError(f"features must be pooler, pooler+mean or mean:K (K a layer: 0 the embeddings), got {kind!r}")
    return int(m[1])


class WithFeatures(torch.nn.Module):
    """The classifier returning its features beside the logits, for the out-of-distribution gate:
    the pooled [CLS] vector, what the classification head itself reads, so the gate looks where
    the model decides; with kind "pooler+mean", also the mean of the last layer over the text's
    tokens (mask-weighted); with "mean:K", that mean of hidden state K alone. Computed as
    BertForSequenceClassification does (dropout is the identity in eval)."""

    def __init__(self, model: torch.nn.Module, kind: str = "pooler"):
        super().__init__()
        self.model = model
        self.config = model.config
        self.kind = kind
        self.layer = feature_layer(kind)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        hidden = self.layer is not None
        out = self.model.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            output_hidden_states=hidden,
            return_dict=True,
        )
        pooled = out.pooler_output
        logits = self.model.classifier(self.model.dropout(pooled))
        if self.kind == "pooler":
            return {"logits": logits, "features": pooled}
        states = out.hidden_states[self.layer] if hidden else out.last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        # A row always holds [CLS], so its mask sums to at least 1; the clamp only guards a
        # hand-made all-padding row from 0 / 0.
        mean = (states * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return {"logits": logits, "features": mean if hidden else torch.cat([pooled, mean], 1)}


class ExportError(Exception):
    """The model cannot be exported faithfully."""


@dataclass
class ParityReport:
    max_abs_diff: float
    cases: int
    tolerance: float


def max_length_of(config, tokenizer, limit: int | None) -> int:
    """The longest token sequence the bundle will feed the model."""
    length = config.max_position_embeddings
    declared = getattr(tokenizer, "model_max_length", None)
    # HF uses a huge sentinel for "no limit"; a declared limit below the position table is one.
    if isinstance(declared, (int, float)) and not declared >= length:
        if isinstance(declared, bool) or not (math.isfinite(declared) and declared == int(declared) and declared >= 3):
            raise ExportError(
                f"tokenizer_config.json declares model_max_length {declared!r}; a token limit must be a whole "
                "number of at least 3 ([CLS], a token, [SEP]): correct it, or remove it to use the model's "
                f"{length} positions"
            )
        length = int(declared)
    if limit is not None:
        length = min(length, limit)
    return length


def _logits(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        return output["logits"]
    if isinstance(output, (tuple, list)):
        return output[0]
    return output.logits


def random_batch(
    generator: torch.Generator, batch: int, length: int, vocab_size: int, type_vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random ids, right padding of random extent (every row keeps >= 1 token), random types."""
    ids = torch.randint(0, vocab_size, (batch, length), generator=generator)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0] = length  # at least one full row, so the batch really is `length` long
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    types = torch.randint(0, type_vocab_size, (batch, length), generator=generator) * mask
    return ids * mask, mask, types


def trace(model: BertForSequenceClassification, length: int) -> torch.jit.ScriptModule:
    # The example must hold padding: transformers skips building the attention mask when a
    # mask is all ones, and a trace records only the branch it saw.
    generator = torch.Generator().manual_seed(0)
    t = max(2, min(16, length))
    ids, mask, types = random_batch(generator, 2, t, model.config.vocab_size, model.config.type_vocab_size)
    mask[1, t // 2 :] = 0
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python booleans concern branches that do not vary for BERT
        # classification (mask padding length, causal flags); the parity check below is
        # what proves the trace right for other shapes.
        warnings.simplefilter("ignore")
        return torch.jit.trace(model, (ids, mask, types), strict=False, check_trace=False)


def save_torchscript(module: torch.jit.ScriptModule, path: Path) -> None:
    """torch.jit.save without the debug records (*.debug_pkl): they hold the Python stack of the
    trace, absolute paths of this machine's files, so the same model would give a different
    model.pt in every checkout (and tell a bundle's users where it was exported)."""
    archive = io.BytesIO()
    torch.jit.save(module, archive)
    archive.seek(0)
    reader = torch._C.PyTorchFileReader(archive)
    writer = torch._C.PyTorchFileWriter(str(path))
    records = reader.get_all_records()
    # ".data/version" in most archives; "version" at the top where the module holds int8
    # tensors (bertgate::linear_int8's weights), an older layout torch still writes for them.
    version = ".data/version" if ".data/version" in records else "version"
    writer.set_min_version(int(reader.get_record(version)))
    for name in records:
        # The writer adds the version and serialization id itself.
        if name.endswith(".debug_pkl") or name in (version, ".data/serialization_id"):
            continue
        data = reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def check_parity(
    eager: BertForSequenceClassification,
    traced: torch.jit.ScriptModule,
    length: int,
    tolerance: float,
    seed: int = 1,
    features: str = "pooler",
) -> ParityReport:
    """Eager vs TorchScript on shapes other than the traced one, padding included; a traced model
    returning features is compared on them too, computed eagerly as `features` says."""
    config = eager.config
    generator = torch.Generator().manual_seed(seed)
    shapes = sorted({(1, 1), (1, 2), (1, length), (3, max(1, length // 3)), (8, length), (5, max(1, length - 1))})
    worst = 0.0
    with torch.no_grad():
        for batch, t in shapes:
            ids, mask, types = random_batch(generator, batch, t, config.vocab_size, config.type_vocab_size)
            want = eager(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            output = traced(ids, mask, types)
            got = _logits(output)
            if isinstance(output, dict) and "features" in output:
                # The features are checked like the logits: the gate reads them.
                want = torch.cat([want, WithFeatures(eager, features)(ids, mask, types)["features"]], 1)
                got = torch.cat([got, output["features"]], 1)
            if got.shape != want.shape:
                raise ExportError(
                    f"trace returned shape {tuple(got.shape)} for batch {batch}x{t}; eager gave {tuple(want.shape)}"
                )
            diff = (got - want).abs().max().item()
            if not math.isfinite(diff) or diff > tolerance:
                raise ExportError(
                    f"trace differs from eager by {diff:.3g} on a {batch}x{t} batch (tolerance {tolerance:g})"
                )
            worst = max(worst, diff)
    return ParityReport(max_abs_diff=worst, cases=len(shapes), tolerance=tolerance)


@contextmanager
def staged(out_dir: Path):
    """A directory beside out_dir, renamed to it when the block completes and removed when it
    fails: a refusal part way (the parity check) leaves no half bundle behind."""
    target = out_dir.resolve()  # a link to an empty directory: the bundle goes where it points
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.export-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        os.replace(staging, target)  # replaces an empty directory
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def check_out_dir(out_dir: Path) -> None:
    """Refused before any work: the bundle goes to a new or empty directory (no file of an
    older bundle, such as its calibration.json, stays beside the new model)."""
    if out_dir.is_symlink() and not out_dir.exists():
        raise ExportError(f"{out_dir} is a symbolic link to {os.readlink(out_dir)}, which does not exist")
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"{out_dir} is a file, not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty: export into a new or empty directory")


def check_classifier(config, model_dir: Path) -> None:
    """bertgate serves single-label decisions (softmax, top-1) over named labels."""
    problem = getattr(config, "problem_type", None)
    if problem in ("multi_label_classification", "regression"):
        raise ExportError(
            f"{model_dir} is a {problem} model (config.json problem_type {problem!r}); bertgate serves "
            "single-label classification (softmax over the labels, one label per text)"
        )
    if config.num_labels < 2:
        raise ExportError(
            f"num_labels is {config.num_labels}: a one-output head is a regression model; bertgate serves "
            "single-label classification, which needs at least 2 labels"
        )
    seen = set()
    for i in range(config.num_labels):
        label = config.id2label.get(i)
        if not isinstance(label, str) or not label:
            raise ExportError(f"{model_dir}: config.json id2label has no non-empty label for id {i}")
        if label in seen:
            raise ExportError(f"{model_dir}: config.json id2label names {label!r} twice")
        seen.add(label)


def check_vocabulary(tokenizer, model: BertForSequenceClassification, model_dir: Path) -> None:
    """Every id the tokenizer can give must have a row in the embedding table."""
    ids = max(tokenizer.get_vocab().values()) + 1
    rows = model.bert.embeddings.word_embeddings.num_embeddings
    if ids > rows:
        raise ExportError(
            f"the tokenizer of {model_dir} gives ids up to {ids - 1}, but the model has only {rows} word "
            "embeddings (tokens added without model.resize_token_embeddings?)"
        )


def export_bundle(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    max_length: int | None = None,
    tolerance: float = 1e-5,
    random_weights: bool = False,
    weights: str = "float32",
    quantize: str | None = None,
    agreement_texts: list[str] | None = None,
    features: bool | str = False,
) -> dict:
    """Writes the bundle; returns the manifest written to bundle.json.

    weights="float16" stores the weights at half precision (half the file); bertgate casts them
    to the device's dtype at load. The parity check then compares against the eager model with
    the same rounded weights, so it still tests the trace, not the rounding.

    quantize="int8": every encoder Linear layer becomes int8 (quantize.py, int8_linear.py:
    weights int8 per output channel, activations quantized per row at run time, the FFN's GELU
    fused; the pooler and the classifier stay float), run by the engine's bertgate::linear_int8;
    the rest keeps `weights`. CPU only. Parity is then checked against the int8 eager model, and
    the agreement with the unquantized one (top-1, max |logit difference|) is reported, on
    `agreement_texts` when given, else on the parity check's random batches.

    features=True or "pooler": model.pt returns {"logits", "features"}, the pooled vector beside
    the logits (bundle format 2), for the out-of-distribution gate `bertgate calibrate` fits;
    "pooler+mean": the features are that vector and the mean of the last layer side by side
    (twice the width); "mean:K": the mean of hidden state K alone (0 the embeddings); bundle.json's
    "features" says which."""
    # Only False and None mean no features: an empty string is a kind, and refused as one.
    kind = "pooler" if features is True else (None if features is False or features is None else features)
    layer = feature_layer(kind) if kind is not None else None
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    check_out_dir(out_dir)
    check_model_dir(model_dir)
    model, loading = BertForSequenceClassification.from_pretrained(
        model_dir, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    # transformers fills what the checkpoint lacks with random values and only warns: a
    # BertModel checkpoint would export with a random classification head.
    missing = [k for k in loading.get("missing_keys", []) if not k.endswith("position_ids")]
    if missing:
        raise ExportError(
            f"{model_dir} lacks weights the classifier needs ({', '.join(sorted(missing)[:4])}"
            f"{', ...' if len(missing) > 4 else ''}): it is not a trained BertForSequenceClassification "
            "(a BertModel or a pre-training checkpoint has no classification head)"
        )
    if loading.get("mismatched_keys"):
        raise ExportError(f"{model_dir} has weights of the wrong shape: {sorted(loading['mismatched_keys'])[:4]}")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not getattr(tokenizer, "is_fast", False):
        raise ExportError(f"{model_dir} has no fast tokenizer (tokenizer.json); bertgate needs one")
    config = model.config
    check_vocabulary(tokenizer, model, model_dir)
    # transformers 5 builds an empty BertTokenizer when the files are missing: every text
    # would become [UNK]. A real WordPiece vocabulary has far more than its special tokens.
    if len(tokenizer) <= len(tokenizer.all_special_tokens) + 1:
        raise ExportError(
            f"the tokenizer of {model_dir} has {len(tokenizer)} tokens, only its special ones: "
            "its vocabulary is missing"
        )
    length = max_length_of(config, tokenizer, max_length)
    if layer is not None and layer > config.num_hidden_layers:
        raise ExportError(
            f"features {kind}: {model_dir} has {config.num_hidden_layers} layers "
            f"(mean:0 is the embeddings, mean:{config.num_hidden_layers} the last layer)"
        )
    if weights not in ("float32", "float16"):
        raise ExportError(f"weights must be float32 or float16, got {weights}")
    if quantize is not None and quantize not in RECIPES:
        gone = " (int8-fast is gone: int8 now quantizes every encoder layer)" if quantize == "int8-fast" else ""
        raise ExportError(f"quantize must be one of {', '.join(RECIPES)} (or none), got {quantize}{gone}")
    if weights == "float16":
        model = model.half().float()  # the values the file will hold
    reference = model  # what the file must reproduce
    if quantize is not None:
        reference = quantize_int8(model, RECIPES[quantize])

    traced = trace(WithFeatures(reference, kind) if kind else reference, length)
    width = config.hidden_size * (2 if kind == "pooler+mean" else 1)  # WithFeatures' output
    with staged(out_dir) as staging:
        model_path = staging / "model.pt"
        save_torchscript(traced.half() if weights == "float16" else traced, model_path)
        reference.float()  # the trace shares the reference's parameters: undo the cast
        # Check the file as it will be loaded (cast to fp32, as bertgate does on a CPU).
        loaded = torch.jit.load(str(model_path)).float()
        parity = check_parity(reference, loaded, length, tolerance, features=kind or "pooler")
        quantization = None
        if quantize is not None:
            quantization = {
                **manifest_record(model, quantize),
                "other_weights": weights,
                "agreement_with_unquantized": agreement(model, loaded, tokenizer, length, agreement_texts),
            }

        config.save_pretrained(staging)
        tokenizer.model_max_length = length
        tokenizer.save_pretrained(staging)
        manifest = {
            "format": BUNDLE_FORMAT_WITH_FEATURES if kind else BUNDLE_FORMAT,
            "outputs": {"logits": config.num_labels, **({"features": width} if kind else {})},
            **({"features": kind} if kind else {}),
            "exporter": f"bertgate_export {__version__}",
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "source": str(model_dir),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "num_labels": config.num_labels,
            "max_length": length,
            "weights": weights,
            "quantization": quantization,
            "parity": {"max_abs_diff": parity.max_abs_diff, "cases": parity.cases, "tolerance": parity.tolerance},
            "random_weights": random_weights,
            "files": file_digests(staging),
        }
        (staging / "bundle.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def agreement(fp32, quantized, tokenizer, length: int, texts: list[str] | None) -> dict:
    """Top-1 agreement and the largest |logit difference| of the quantized file against the
    unquantized eager model."""
    same = total = 0
    worst = 0.0
    with torch.no_grad():
        if texts:
            batches = []
            for start in range(0, len(texts), 64):
                enc = tokenizer(
                    texts[start : start + 64], truncation=True, max_length=length, padding=True, return_tensors="pt"
                )
                batches.append((enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]))
        else:
            generator = torch.Generator().manual_seed(2)
            cfg = fp32.config
            batches = [random_batch(generator, 16, length, cfg.vocab_size, cfg.type_vocab_size) for _ in range(4)]
        for ids, mask, types in batches:
            want = fp32(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            got = _logits(quantized(ids, mask, types))
            same += int((want.argmax(1) == got.argmax(1)).sum())
            total += len(ids)
            worst = max(worst, (want - got).abs().max().item())
    return {
        "on": f"{len(texts)} texts" if texts else f"{total} random sequences",
        "top1": same / total,
        "max_abs_logit_diff": worst,
    }


TOKENIZER_FILES = ("tokenizer.json", "vocab.txt")


def check_model_dir(model_dir: Path) -> None:
    """What a model directory must hold before anything is loaded, named plainly."""
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} has no config.json: it is not a save_pretrained model directory")
    config = AutoConfig.from_pretrained(model_dir)
    model_type = config.model_type
    if model_type != "bert":
        raise ExportError(
            f"{model_dir} holds a {model_type!r} model; bertgate exports BertForSequenceClassification "
            "(model_type 'bert')"
        )
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise ExportError(
            f"{model_dir} has no tokenizer ({' or '.join(TOKENIZER_FILES)}): save the tokenizer beside the model "
            "(tokenizer.save_pretrained) before exporting"
        )
    check_classifier(config, model_dir)


# The files whose bytes bertgate checks at load. A TorchScript archive stores tensors
# uncompressed and unchecked, so a flipped byte in model.pt would otherwise load as a
# silently different model. calibration.json is not sealed: `bertgate calibrate` rewrites it.
SEALED_FILES = ("model.pt", "config.json", "tokenizer.json", "tokenizer_config.json")


def file_digests(out_dir: Path) -> dict:
    digests = {}
    for name in SEALED_FILES:
        path = out_dir / name
        if path.exists():
            sha = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    sha.update(chunk)
            digests[name] = {"bytes": path.stat().st_size, "sha256": sha.hexdigest()}
    return digests
