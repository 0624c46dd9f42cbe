"""Issue 23, lever 2 (fusion in the exported graph): what fusing could save, and what oneDNN Graph does.

    node scripts/dev-env.mjs .venv/bin/python bench/fusion_spike.py FLOAT_BUNDLE INT8_BUNDLE [--rounds 5]

A fusion pass can save at most the time of the ops it merges, so first the share of each op in
one forward pass of each bundle, frozen as the engine runs it (torch.profiler, self CPU time,
one intra-op thread), at batch 1 (one 48-token text) and batch 32 (texts of 128 tokens). Then
the one fuser the pip libtorch carries for CPU TorchScript, oneDNN Graph (LLGA,
`torch.jit.enable_onednn_fusion`), on the float bundle against the plain frozen graph,
interleaved rounds, median ms; and what it costs where shapes vary, as a server's batches do:
each new [rows, tokens] shape compiles its partitions again and keeps them (RSS after 40 shapes,
the engine's fusion strategy, DYNAMIC 20), and the first call at a new shape. Prints JSON lines.
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


def frozen(bundle: str) -> torch.jit.ScriptModule:
    return torch.jit.freeze(torch.jit.load(str(Path(bundle) / "model.pt")).float().eval())


def shares(model: torch.jit.ScriptModule, inputs: tuple[torch.Tensor, ...]) -> dict[str, float]:
    """Self CPU time per op over 5 passes, as a share of the total; ops under 1% pooled."""
    for _ in range(3):
        model(*inputs)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            model(*inputs)
    rows = [(e.key, e.self_cpu_time_total) for e in prof.key_averages()]
    total = sum(t for _, t in rows)
    out: dict[str, float] = {}
    for key, t in sorted(rows, key=lambda r: -r[1]):
        share = t / total
        name = key if share >= 0.01 else "other"
        out[name] = round(out.get(name, 0.0) + share, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("float_bundle")
    parser.add_argument("int8_bundle")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.backends.quantized.engine = "x86"
    inputs = {}
    for rows, length in ((1, 48), (32, 128)):
        ids = torch.randint(5, 1000, (rows, length))
        inputs[rows] = (ids, torch.ones_like(ids), torch.zeros_like(ids))

    with torch.no_grad():
        plain, int8 = frozen(args.float_bundle), frozen(args.int8_bundle)
        for name, model in (("float", plain), ("int8", int8)):
            for rows in inputs:
                print(json.dumps({"op_shares": name, "batch": rows, "shares": shares(model, inputs[rows])}))

        torch.jit.enable_onednn_fusion(True)
        llga = frozen(args.float_bundle)
        llga_int8 = frozen(args.int8_bundle)
        for rows in inputs:  # the profiling executor specialises, then fuses, over the first runs
            for _ in range(4):
                llga(*inputs[rows])
                llga_int8(*inputs[rows])
        torch.jit.enable_onednn_fusion(False)
        fused_kinds = sorted({n.kind() for n in torch.jit.last_executed_optimized_graph().nodes()})
        print(json.dumps({"llga_graph_ops": [k for k in fused_kinds if "onednn" in k.lower() or "Fusion" in k]}))
        worst = max(
            (llga(*inputs[rows])["logits"] - plain(*inputs[rows])["logits"]).abs().max().item() for rows in inputs
        )
        print(json.dumps({"llga_vs_plain_max_abs_logit_diff": worst}))

        paths = {}
        for rows in inputs:
            paths[f"float frozen, batch {rows}"] = lambda rows=rows: plain(*inputs[rows])
            paths[f"float frozen + oneDNN Graph, batch {rows}"] = lambda rows=rows: llga(*inputs[rows])
            paths[f"int8 frozen, batch {rows}"] = lambda rows=rows: int8(*inputs[rows])
            paths[f"int8 frozen + oneDNN Graph, batch {rows}"] = lambda rows=rows: llga_int8(*inputs[rows])
        times: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(args.rounds):
            for name, run in paths.items():
                run()
                start = time.perf_counter()
                for _ in range(5):
                    run()
                times[name].append((time.perf_counter() - start) / 5 * 1000)
    for name, ms in times.items():
        print(json.dumps({"path": name, "median_ms": round(statistics.median(ms), 3)}))
    varying_shapes(args.float_bundle)


def varying_shapes(bundle: str) -> None:
    """oneDNN Graph where every batch may have another shape: memory per shape, first-call cost."""
    torch.jit.set_fusion_strategy([("DYNAMIC", 20)])
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # noqa: E731
    for fused in (False, True):
        torch.jit.enable_onednn_fusion(fused)
        model = frozen(bundle)
        before = rss()
        first, third = [], []
        with torch.no_grad():
            for rows in (1, 2, 3, 4):
                for length in range(24, 121, 8):
                    ids = torch.randint(5, 1000, (rows, length))
                    call = (ids, torch.ones_like(ids), torch.zeros_like(ids))
                    for i in range(3):
                        start = time.perf_counter()
                        model(*call)
                        ms = (time.perf_counter() - start) * 1000
                        (first if i == 0 else third if i == 2 else []).append(ms)
        print(
            json.dumps(
                {
                    "varying_shapes": "oneDNN Graph" if fused else "plain",
                    "shapes": len(first),
                    "rss_growth_mib": round(rss() - before),
                    "first_call_median_ms": round(statistics.median(first), 2),
                    "third_call_median_ms": round(statistics.median(third), 2),
                }
            )
        )
    torch.jit.enable_onednn_fusion(False)


if __name__ == "__main__":
    main()
