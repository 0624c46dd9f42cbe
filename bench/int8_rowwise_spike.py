"""Issue 23, lever 3 spike: int8 Linear layers with activations quantized per row (per token),
not per batch, on ATen's integer matmul (`torch._int_mm`), no quantized tensors.

    node scripts/dev-env.mjs .venv/bin/python bench/int8_rowwise_spike.py HF_DIR data/debian [--limit N]
        [--variants ...]

Agreement with the float model and accuracy on the test split, for variants of the numerics,
computed here in plain ops (what the engine's fused op must reproduce; speed is measured apart):
  sym      each row scaled symmetrically to [-127, 127]
  sym-w7   sym, with weights in [-64, 64] (what the engine's kernel needs on CPUs without VNNI)
  asym     each row mapped onto [-128, 127] with its own zero point (the row's minimum to -128)
  asym-keep0  asym, with layer 0's FFN down-projection in float (today's `int8` recipe keeps it)
Weights: int8 per output channel, symmetric. The pooler and classifier stay in float (HEAD).
Per-row scales make each text's result independent of the batch it runs in, which today's
per-batch scale does not.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from pathlib import Path

import numpy as np
import torch
from transformers import BertForSequenceClassification, PreTrainedTokenizerFast

HEAD = (r"pooler\.dense", "classifier")


class RowInt8Linear(torch.nn.Module):
    def __init__(self, linear: torch.nn.Linear, asym: bool, levels: int = 127) -> None:
        super().__init__()
        w = linear.weight.detach().float()
        scale = (w.abs().amax(1) / levels).clamp_min(1e-12)
        q = torch.round(w / scale[:, None]).clamp(-levels, levels).to(torch.int8)
        self.register_buffer("wt", q.t().contiguous())  # [K, N] for _int_mm
        self.register_buffer("w_scale", scale)
        self.register_buffer("colsum", q.to(torch.int32).sum(1))
        self.register_buffer("bias", linear.bias.detach().float())
        self.asym = asym

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        if self.asym:
            lo = x2.amin(1, keepdim=True).clamp(max=0)
            hi = x2.amax(1, keepdim=True).clamp(min=0)
            s = ((hi - lo) / 255).clamp_min(1e-12)
            z = torch.round(-128 - lo / s)
            q = (torch.round(x2 / s) + z).clamp(-128, 127).to(torch.int8)
        else:
            s = (x2.abs().amax(1, keepdim=True) / 127).clamp_min(1e-12)
            z = torch.zeros_like(s)
            q = torch.round(x2 / s).clamp(-127, 127).to(torch.int8)
        acc = torch._int_mm(q, self.wt)
        acc = acc - z.to(torch.int32) * self.colsum
        out = acc.float() * s * self.w_scale + self.bias
        return out.reshape(*shape[:-1], -1)


def swap(model: torch.nn.Module, asym: bool, keep: tuple[str, ...], levels: int = 127) -> torch.nn.Module:
    import copy

    m = copy.deepcopy(model)
    for name, module in list(m.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, torch.nn.Linear) and not any(re.search(rf"(^|\.){k}$", full) for k in keep):
                setattr(module, child_name, RowInt8Linear(child, asym, levels))
    return m


def read(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("hf_dir")
    p.add_argument("data")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--variants", default="sym,asym,asym-keep0")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    hf = Path(args.hf_dir)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(hf / "tokenizer.json"))
    model = BertForSequenceClassification.from_pretrained(hf, dtype=torch.float32).eval().half().float()
    index = {label: int(i) for i, label in model.config.id2label.items()}
    test = read(Path(args.data) / "test.jsonl.gz")
    if args.limit:
        test = test[: args.limit]
    texts = [r["text"] for r in test]
    truth = np.array([index[r["label"]] for r in test])
    order = np.argsort([len(t) for t in texts])
    variants = {
        "sym": swap(model, False, HEAD),
        "asym": swap(model, True, HEAD),
        "asym-keep0": swap(model, True, (*HEAD, r"layer\.0\.output\.dense")),
        "sym-keep0": swap(model, False, (*HEAD, r"layer\.0\.output\.dense")),
        # Weights in [-64, 64]: oneDNN's int8 kernels on CPUs without VNNI add pairs of u8 x s8
        # products in int16, which 8-bit weights overflow (`_int_mm` is then wrong by up to 2e5).
        "sym-w7": swap(model, False, HEAD, 64),
    }
    names = args.variants.split(",")
    top = {n: np.zeros(len(texts), int) for n in ["float", *names]}
    worst = dict.fromkeys(names, 0.0)
    with torch.no_grad():
        for i in range(0, len(texts), args.batch):
            rows = order[i : i + args.batch]
            enc = tok([texts[j] for j in rows], truncation=True, max_length=128, padding=True, return_tensors="pt")
            ref = model(**enc).logits
            top["float"][rows] = ref.argmax(1).numpy()
            for n in names:
                got = variants[n](**enc).logits
                top[n][rows] = got.argmax(1).numpy()
                worst[n] = max(worst[n], (got - ref).abs().max().item())
    print(json.dumps({"variant": "float", "accuracy": round(float((top["float"] == truth).mean()), 4)}))
    for n in names:
        print(
            json.dumps(
                {
                    "variant": n,
                    "agreement": round(float((top[n] == top["float"]).mean()), 4),
                    "accuracy": round(float((top[n] == truth).mean()), 4),
                    "max_abs_logit_diff": round(worst[n], 3),
                    "texts": len(texts),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
