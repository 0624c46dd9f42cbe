"""Issue 23 (fp32 >= the fastest fp32 peer): which CPU matmul path the frozen graph takes, and what it costs.

    node scripts/dev-env.mjs .venv/bin/python bench/fp32_paths.py BUNDLE_DIR [--rounds 5]

The pip torch does fp32 matmuls in MKL, which picks slow kernels on CPUs that are not Intel's;
oneDNN (which `torch.jit.optimize_for_inference` moves Linear layers to) and onnxruntime's MLAS
do not look at the vendor. On one intra-op thread, interleaved rounds, median ms: one
[128, 384] x [384, 1536] matmul in torch (MKL) and numpy (OpenBLAS); the bundle's model.pt frozen
as bertgate runs it, and the same after optimize_for_inference, at batch 1 (one 48-token text)
and 32 (texts of 128 tokens). Prints one JSON line per path with the CPU's vendor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from pathlib import Path

import numpy as np
import torch

warnings.filterwarnings("ignore")


def vendor() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("vendor_id"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("bundle")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    loaded = torch.jit.load(str(Path(args.bundle) / "model.pt")).float().eval()
    frozen = torch.jit.freeze(torch.jit.load(str(Path(args.bundle) / "model.pt")).float().eval())
    optimized = torch.jit.optimize_for_inference(torch.jit.freeze(loaded))
    vocab = 1000
    inputs = {}
    for rows, length in ((1, 48), (32, 128)):
        ids = torch.randint(5, vocab, (rows, length))
        inputs[rows] = (ids, torch.ones_like(ids), torch.zeros_like(ids))
    a, w = torch.randn(128, 384), torch.randn(1536, 384)
    an, wn = a.numpy(), w.numpy().T.copy()
    paths = {
        "matmul 128x384x1536, torch (MKL)": lambda: a @ w.t(),
        "matmul 128x384x1536, numpy (OpenBLAS)": lambda: an @ wn,
    }
    for rows in inputs:
        paths[f"frozen model.pt, batch {rows}"] = lambda rows=rows: frozen(*inputs[rows])
        paths[f"frozen + optimize_for_inference (oneDNN), batch {rows}"] = lambda rows=rows: optimized(*inputs[rows])
    with torch.no_grad():
        reference = frozen(*inputs[32])
        other = optimized(*inputs[32])
        pick = (lambda o: o["logits"]) if isinstance(reference, dict) else (lambda o: o)
        drift = (pick(reference) - pick(other)).abs().max().item()
        times: dict[str, list[float]] = {name: [] for name in paths}
        for fn in paths.values():
            for _ in range(3):
                fn()  # the executor profiles its first runs
        for _ in range(args.rounds):
            for name, fn in paths.items():
                repeat = 20 if "batch 32" not in name else 2
                start = time.perf_counter()
                for _ in range(repeat):
                    fn()
                times[name].append((time.perf_counter() - start) * 1000 / repeat)
    for name, samples in times.items():
        print(json.dumps({"path": name, "ms": round(statistics.median(samples), 3)}))
    print(json.dumps({"cpu_vendor": vendor(), "torch": torch.__version__, "optimized_max_abs_diff": drift}))


if __name__ == "__main__":
    main()
