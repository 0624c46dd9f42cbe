"""bfloat16 on the CPU: its speed through oneDNN, and the memory oneDNN keeps under varying shapes.

    node scripts/dev-env.mjs .venv/bin/python bench/bf16_spike.py BUNDLE speed
    node scripts/dev-env.mjs .venv/bin/python bench/bf16_spike.py BUNDLE memory {bf16,fp32} [--onednn-off]
    (ONEDNN_PRIMITIVE_CACHE_CAPACITY=N in the environment bounds oneDNN's primitive cache)

speed: the bundle frozen in fp32, in bfloat16 with oneDNN (torch's default), and in bfloat16 with
oneDNN off (as the engine runs the CPU: docs/design-decisions.md), one intra-op thread, batch 1 (one
48-token text) and batch 32 (texts of 128 tokens), median ms of 5 rounds. memory: 1,500 forward passes
of shapes that change on every call (1-32 rows, 8-128 tokens), and how far RSS grew past the
warm-up. One process per memory run: RSS and oneDNN's switch are the process's.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore")


def load(bundle: str, dtype: torch.dtype) -> torch.jit.ScriptModule:
    return torch.jit.freeze(torch.jit.load(str(Path(bundle) / "model.pt")).to(dtype).eval())


def call(rows: int, length: int) -> tuple[torch.Tensor, ...]:
    ids = torch.randint(5, 1000, (rows, length))
    return ids, torch.ones_like(ids), torch.zeros_like(ids)


def speed(bundle: str) -> None:
    variants = [("fp32", torch.float32, True), ("bf16, oneDNN", torch.bfloat16, True)]
    variants.append(("bf16, oneDNN off", torch.bfloat16, False))
    for name, dtype, onednn in variants:
        torch.backends.mkldnn.enabled = onednn
        model = load(bundle, dtype)
        for rows, length in ((1, 48), (32, 128)):
            inputs = call(rows, length)
            with torch.no_grad():
                for _ in range(3):
                    model(*inputs)
                ms = []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(3):
                        model(*inputs)
                    ms.append((time.perf_counter() - start) / 3 * 1000)
            print(json.dumps({"variant": name, "batch": rows, "median_ms": round(statistics.median(ms), 2)}))


def memory(bundle: str, dtype: str, onednn: bool) -> None:
    torch.backends.mkldnn.enabled = onednn
    model = load(bundle, torch.bfloat16 if dtype == "bf16" else torch.float32)
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    with torch.no_grad():
        for k in range(20):
            model(*call(1 + k % 4, 16 + k))
        base, start, texts = rss(), time.perf_counter(), 0
        for k in range(1500):
            rows = 1 + (k * 7) % 32
            model(*call(rows, 8 + (k * 13) % 121))
            texts += rows
            if k + 1 in (300, 700, 1500):
                print(
                    json.dumps(
                        {"dtype": dtype, "onednn": onednn, "calls": k + 1, "rss_growth_mib": round(rss() - base)}
                    )
                )
    print(json.dumps({"texts_per_s": round(texts / (time.perf_counter() - start), 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle")
    parser.add_argument("what", choices=["speed", "memory"])
    parser.add_argument("dtype", nargs="?", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--onednn-off", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.what == "speed":
        speed(args.bundle)
    else:
        memory(args.bundle, args.dtype, not args.onednn_off)


if __name__ == "__main__":
    main()
