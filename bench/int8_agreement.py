"""Top-1 agreement of an int8 bundle with the float bundle of the same weights, on labelled texts.

    python bench/int8_agreement.py FLOAT_BUNDLE INT8_BUNDLE data/debian/test.jsonl.gz [--max-length 128]

Both model files run in this torch (1 thread, batches of 32 texts of similar length), as the
exporter's parity check does; prints one JSON line: agreement, both accuracies, the largest
|logit difference|.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import bertgate_export.int8_linear  # noqa: F401 (bertgate::linear_int8, which int8 model files call)
import numpy as np
import torch
from transformers import PreTrainedTokenizerFast


def logits_of(output) -> torch.Tensor:
    return output["logits"] if isinstance(output, dict) else output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("float_bundle")
    parser.add_argument("int8_bundle")
    parser.add_argument("data")
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    a = torch.jit.load(str(Path(args.float_bundle) / "model.pt")).float().eval()
    # fp16-stored weights are cast to fp32, as bertgate does on a CPU.
    b = torch.jit.load(str(Path(args.int8_bundle) / "model.pt")).float().eval()
    config = json.loads((Path(args.float_bundle) / "config.json").read_text())
    index = {label: int(i) for i, label in config["id2label"].items()}
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(args.float_bundle) / "tokenizer.json"))
    opener = gzip.open if args.data.endswith(".gz") else open
    with opener(args.data, "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    texts = [r["text"] for r in rows]
    truth = np.array([index[r["label"]] for r in rows])
    order = np.argsort([len(t) for t in texts])
    pa, pb = np.zeros(len(texts), int), np.zeros(len(texts), int)
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(texts), 32):
            rows_ = order[start : start + 32]
            enc = tokenizer(
                [texts[i] for i in rows_],
                truncation=True,
                max_length=args.max_length,
                padding=True,
                return_tensors="pt",
            )
            ids, mask = enc["input_ids"], enc["attention_mask"]
            la, lb = logits_of(a(ids, mask, torch.zeros_like(ids))), logits_of(b(ids, mask, torch.zeros_like(ids)))
            pa[rows_], pb[rows_] = la.argmax(1).numpy(), lb.argmax(1).numpy()
            worst = max(worst, (la - lb).abs().max().item())
    print(
        json.dumps(
            {
                "texts": len(texts),
                "top1_agreement": round(float((pa == pb).mean()), 4),
                "accuracy_float": round(float((pa == truth).mean()), 4),
                "accuracy_int8": round(float((pb == truth).mean()), 4),
                "max_abs_logit_diff": round(worst, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
