"""Issue 23, lever 1: which int8 recipe agrees with its float model, and how fast each runs.

    node scripts/dev-env.mjs .venv/bin/python bench/int8_recipes.py HF_DIR data/debian [--max-length 128] [--rounds 3] [--calibration-texts 512]
        [--recipes float,dynamic,...]

On the whole model (a trained one: agreement depends on the weights), traced and frozen as the
engine runs it, one intra-op thread. Recipes:
  float            fp32 (the weights as the bundle stores them: fp16-rounded)
  dynamic          today's export: torch.ao quantize_dynamic, int8 weights per tensor, activations
                   quantized per batch to 7 bits (torch.ao's dynamic Linear passes reduce_range=True)
  dynamic-8bit     the same with the activations' full 8 bits (reduce_range=False)
  dynamic-pc       per-channel weights, 7-bit activations
  dynamic-pc-8bit  per-channel weights, 8-bit activations
  static-pc-8bit   static int8: activation scales fixed from the calibration split's texts (no
                   per-batch min/max), per-channel weights, 8-bit activations
  dynamic-pc-8bit-fp32head           dynamic-pc-8bit with the pooler and classifier in fp32
  dynamic-pc-8bit-fp32head-fp32down  the same and the FFN down-projections (output.dense) in fp32
  keep             dynamic-pc-8bit with the layers named by --keep in fp32
Each recipe under the x86 quantized engine; `--engine fbgemm` or `onednn` for another.
Prints one JSON line per recipe: top-1 agreement with `float` and accuracy on the test split,
largest |logit difference|, and the median ms per text at batch 1 and per batch of 32 (rounds
interleaved, 256 texts).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import json
import re
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

from bertgate_export.legacy_int8 import DynamicLinear

warnings.filterwarnings("ignore")  # torch.ao's deprecation notices: the subject of lever 0, not this one


def replace_linears(module: torch.nn.Module, make) -> None:
    for name, child in list(module.named_children()):
        replaced = make(child)
        if replaced is not None:
            setattr(module, name, replaced)
        else:
            replace_linears(child, make)


def dynamic(model, per_channel: bool, full_range: bool, keep: tuple[str, ...] = ()):
    """keep: Linear layers left in fp32, by a pattern their name ends with."""
    qconfig = (
        torch.ao.quantization.per_channel_dynamic_qconfig
        if per_channel
        else torch.ao.quantization.default_dynamic_qconfig
    )
    names = {
        name: qconfig
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not any(re.search(f"(^|\\.){k}$", name) for k in keep)
    }
    q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), names, dtype=torch.qint8)
    if full_range:
        dq = torch.ao.nn.quantized.dynamic.Linear
        replace_linears(q, lambda c: DynamicLinear(c, reduce_range=False) if isinstance(c, dq) else None)
    return q


def static(model, batches):
    from torch.ao.quantization import QConfig, QuantWrapper, convert, prepare
    from torch.ao.quantization.observer import HistogramObserver, default_per_channel_weight_observer

    m = copy.deepcopy(model)
    qconfig = QConfig(activation=HistogramObserver.with_args(reduce_range=False), weight=default_per_channel_weight_observer)

    def wrap(child):
        if not isinstance(child, torch.nn.Linear):
            return None
        w = QuantWrapper(child)
        w.qconfig = qconfig
        return w

    replace_linears(m, wrap)
    prepare(m, inplace=True)
    with torch.no_grad():
        for ids, mask in batches:
            m(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids))
    convert(m, inplace=True)
    return m


# The pooler and the classifier act on one vector per text, not one per token: in fp32 they
# cost next to nothing, and their error goes straight into the logits.
HEAD = (r"pooler\.dense", "classifier")


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("hf_dir")
    parser.add_argument("data")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration-texts", type=int, default=512)
    parser.add_argument("--engine", default="x86")
    parser.add_argument("--recipes", default="float,dynamic,dynamic-8bit,dynamic-pc,dynamic-pc-8bit,static-pc-8bit")
    parser.add_argument(
        "--keep",
        action="append",
        default=[],
        help="recipe `keep`: dynamic-pc-8bit with the Linear layers whose name ends with this pattern in fp32 "
        "(repeatable)",
    )
    parser.add_argument("--limit", type=int, default=0, help="test texts for agreement (0: all)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.quantized.engine = args.engine
    hf = Path(args.hf_dir)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(hf / "tokenizer.json"))
    model = BertForSequenceClassification.from_pretrained(hf, dtype=torch.float32).eval()
    model = model.half().float()  # the values an fp16 bundle holds
    index = {label: int(i) for i, label in model.config.id2label.items()}

    def encode(texts):
        enc = tokenizer(texts, truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    data = Path(args.data)
    test = read(data / "test.jsonl.gz")
    if args.limit:
        test = test[: args.limit]
    calib_rows = read(data / "calibration.jsonl.gz")[: args.calibration_texts]
    calib = [encode([r["text"] for r in calib_rows[i : i + 32]]) for i in range(0, len(calib_rows), 32)]

    builders = {
        "float": lambda: model,
        "dynamic": lambda: dynamic(model, per_channel=False, full_range=False),
        "dynamic-8bit": lambda: dynamic(model, per_channel=False, full_range=True),
        "dynamic-pc": lambda: dynamic(model, per_channel=True, full_range=False),
        "dynamic-pc-8bit": lambda: dynamic(model, per_channel=True, full_range=True),
        "static-pc-8bit": lambda: static(model, calib),
        "dynamic-pc-8bit-fp32head": lambda: dynamic(model, True, True, keep=HEAD),
        "dynamic-pc-8bit-fp32head-fp32down": lambda: dynamic(model, True, True, keep=(*HEAD, r"layer\.\d+\.output\.dense")),
        "keep": lambda: dynamic(model, True, True, keep=tuple(args.keep)),
    }
    names = args.recipes.split(",")
    example = encode(["a short example text", "a second, somewhat longer example text for the trace"])
    graphs = {}
    for name in names:
        eager = builders[name]()
        with torch.no_grad():
            traced = torch.jit.trace(
                eager, (example[0], example[1], torch.zeros_like(example[0])), strict=False, check_trace=False
            )
        graphs[name] = torch.jit.freeze(traced.eval())

    def logits(graph, ids, mask):
        out = graph(ids, mask, torch.zeros_like(ids))
        return out["logits"] if isinstance(out, dict) else out

    # Agreement and accuracy on the test split, batches of 32 texts of similar length.
    texts = [r["text"] for r in test]
    truth = np.array([index[r["label"]] for r in test])
    order = np.argsort([len(t) for t in texts])
    batches = [order[i : i + 32] for i in range(0, len(texts), 32)]
    encoded = [encode([texts[i] for i in rows]) for rows in batches]
    top = {name: np.zeros(len(texts), int) for name in names}
    worst = dict.fromkeys(names, 0.0)
    with torch.no_grad():
        for rows, (ids, mask) in zip(batches, encoded, strict=True):
            reference = logits(graphs[names[0]], ids, mask)
            top[names[0]][rows] = reference.argmax(1).numpy()
            for name in names[1:]:
                got = logits(graphs[name], ids, mask)
                top[name][rows] = got.argmax(1).numpy()
                worst[name] = max(worst[name], (got - reference).abs().max().item())

    # Speed: 256 texts in their order, one per call and 32 per call, rounds interleaved.
    sample = texts[:256]
    ones = [encode([t]) for t in sample[:64]]
    thirty_twos = [encode(sample[i : i + 32]) for i in range(0, len(sample), 32)]
    times = {name: {"b1": [], "b32": []} for name in names}
    with torch.no_grad():
        for graph in graphs.values():
            for ids, mask in ones[:3] + thirty_twos[:1]:
                logits(graph, ids, mask)  # the executor profiles its first runs
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                for ids, mask in ones:
                    logits(graphs[name], ids, mask)
                times[name]["b1"].append((time.perf_counter() - start) * 1000 / len(ones))
                start = time.perf_counter()
                for ids, mask in thirty_twos:
                    logits(graphs[name], ids, mask)
                times[name]["b32"].append((time.perf_counter() - start) * 1000 / len(thirty_twos))
    base = names[0]
    for name in names:
        b1, b32 = statistics.median(times[name]["b1"]), statistics.median(times[name]["b32"])
        print(
            json.dumps(
                {
                    "recipe": name,
                    "engine": args.engine,
                    "agreement": round(float((top[name] == top[base]).mean()), 4),
                    "accuracy": round(float((top[name] == truth).mean()), 4),
                    "max_abs_logit_diff": round(worst[name], 3),
                    "ms_batch1": round(b1, 2),
                    "ms_batch32": round(b32, 1),
                    "speed_vs_first_b1": round(statistics.median(times[base]["b1"]) / b1, 3),
                    "speed_vs_first_b32": round(statistics.median(times[base]["b32"]) / b32, 3),
                }
            ),
            flush=True,
        )
    print(json.dumps({"texts": len(texts), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
