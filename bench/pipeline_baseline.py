"""A peer for bench/peers.ts: the Python transformers text-classification pipeline on the same
model (its Hugging Face directory), texts, truncation and thread count. Prints one JSON
object: texts/s and median latency per call at batch 1 and batch 32, and the top labels.

    python bench/pipeline_baseline.py HF_DIR TEXTS_JSON --threads N --max-length N
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from transformers import pipeline


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("texts")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-length", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    texts = json.load(open(args.texts))
    clf = pipeline("text-classification", model=args.model, tokenizer=args.model, device=-1)
    options = {"truncation": True, "max_length": args.max_length}
    clf(texts[:8], batch_size=8, **options)  # warm-up
    out = {}
    labels = []
    for batch in (1, 32):
        calls, start = [], time.perf_counter()
        for i in range(0, len(texts), batch):
            t0 = time.perf_counter()
            result = clf(texts[i : i + batch], batch_size=batch, **options)
            calls.append((time.perf_counter() - t0) * 1000)
            if batch == 1:
                labels += [r["label"] for r in result]
        out[str(batch)] = {"texts_per_s": len(texts) / (time.perf_counter() - start), "p50_ms": statistics.median(calls)}
    print(json.dumps({"runs": out, "labels": labels}))


if __name__ == "__main__":
    main()
