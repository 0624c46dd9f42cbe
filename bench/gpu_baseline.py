"""The baseline of bench/gpu.ts: Python torch running the same TorchScript file on the GPU in a
tight loop, prepared as bertgate prepares it (device constants pointed at the GPU, weights cast
to the dtype, frozen), and the device's dense fp16/bf16 matmul ceiling measured in this run.

    python bench/gpu_baseline.py MODEL_PT --dtype float16 --batches 1,8,64,256 --seq-len 128 --iterations N
Prints one JSON object: per batch the median and p99 ms of a forward pass (synchronised), and
the matmul TFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch


def retarget_device_constants(graph: torch._C.Graph, device: str) -> int:
    """As the engine does (native/engine/torchscript_model.cpp): a trace bakes devices in."""
    changed = 0
    nodes = list(graph.nodes())
    while nodes:
        node = nodes.pop()
        for block in node.blocks():
            nodes.extend(block.nodes())
        if node.kind() == "prim::Constant" and node.output().type().kind() == "DeviceObjType":
            node.s_("value", device)
            changed += 1
    return changed


def matmul_tflops(dtype: torch.dtype) -> float:
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(20):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 20 * 2 * n**3 / (start.elapsed_time(end) / 1000) / 1e12


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--batches", default="1,8,64,256")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    module = torch.jit.load(args.model, map_location="cuda").eval().to(dtype)
    module = torch.jit.freeze(module)
    retarget_device_constants(module.graph, "cuda:0")
    out = {"forward": {}, "matmul_tflops": matmul_tflops(dtype if dtype != torch.float32 else torch.float16)}
    with torch.inference_mode():
        for batch in [int(b) for b in args.batches.split(",")]:
            ids = torch.randint(5, 1000, (batch, args.seq_len), device="cuda")
            mask, types = torch.ones_like(ids), torch.zeros_like(ids)
            for _ in range(5):
                module(ids, mask, types)
            torch.cuda.synchronize()
            times = []
            for _ in range(args.iterations):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                module(ids, mask, types)
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            times.sort()
            out["forward"][str(batch)] = {
                "median_ms": statistics.median(times),
                "p99_ms": times[min(len(times) - 1, int(0.99 * len(times)))],
            }
    out["device"] = torch.cuda.get_device_name()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
