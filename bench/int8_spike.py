"""Issue 23, lever 0: int8 without quantized tensors, on one encoder Linear, against today's path.

    python bench/int8_spike.py [--rows 2048] [--k 384] [--n 1536] [--rounds 5]

Times, on one intra-op thread and the geometry of one FFN up-projection of the default model
(batch 16 x 128 tokens, hidden 384, intermediate 1536): fp32 Linear; today's dynamic int8 Linear
(torch.ao, fbgemm: the quantized-tensor path that is being removed); ATen's integer matmul
`_int_mm` alone on prepared int8 operands; the whole lever-0 step (per-row activation quantize
with ordinary ops, `_int_mm`, rescale, bias) in eager and scripted; and `_weight_int8pack_mm`
(int8 weights, float activations). Rounds are interleaved; prints the median ms of each and its
ratio to today's int8 Linear, one JSON line per path.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

warnings.filterwarnings("ignore")  # torch.ao's deprecation: the point of the spike


def own_int8(x: torch.Tensor, wq_t: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # Symmetric per-row activation scale: the quantize step lever 0 must fuse to pay off.
    x_scale = x.abs().amax(dim=1, keepdim=True).clamp_min(1e-8) / 127.0
    xq = torch.round(x / x_scale).clamp_(-127, 127).to(torch.int8)
    acc = torch._int_mm(xq, wq_t)
    return acc.to(torch.float32) * (x_scale * w_scale) + bias


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--k", type=int, default=384)
    parser.add_argument("--n", type=int, default=1536)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x = torch.randn(args.rows, args.k)
    linear = torch.nn.Linear(args.k, args.n).eval()
    dynamic = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear}, dtype=torch.qint8)
    w = linear.weight.detach()
    w_scale = (w.abs().amax(dim=1).clamp_min(1e-8) / 127.0).reshape(1, -1)
    wq_t = torch.round(w / w_scale.reshape(-1, 1)).clamp(-127, 127).to(torch.int8).t().contiguous()
    bias = linear.bias.detach()
    xq = torch.round(x / (x.abs().max() / 127)).to(torch.int8)
    scripted = torch.jit.script(own_int8)
    w_pack = torch.round(w / w_scale.reshape(-1, 1)).clamp(-127, 127).to(torch.int8)

    paths = {
        "fp32 Linear": lambda: linear(x),
        "dynamic int8 Linear (torch.ao, fbgemm)": lambda: dynamic(x),
        "_int_mm alone (operands prepared)": lambda: torch._int_mm(xq, wq_t),
        "lever 0: quantize + _int_mm + rescale, eager": lambda: own_int8(x, wq_t, w_scale, bias),
        "lever 0: the same, torch.jit.script": lambda: scripted(x, wq_t, w_scale, bias),
        "_weight_int8pack_mm (float activations)": lambda: torch._weight_int8pack_mm(x, w_pack, w_scale.reshape(-1)),
    }
    # The same answer, before timing anything: lever 0 must agree with fp32 to int8 precision.
    reference = linear(x)
    drift = (own_int8(x, wq_t, w_scale, bias) - reference).abs().max().item()
    times: dict[str, list[float]] = {name: [] for name in paths}
    with torch.inference_mode():
        for fn in paths.values():
            fn()  # warm-up (the scripted one profiles here)
        for _ in range(args.rounds):
            for name, fn in paths.items():
                start = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - start) * 1000)
    base = statistics.median(times["dynamic int8 Linear (torch.ao, fbgemm)"])
    for name, samples in times.items():
        ms = statistics.median(samples)
        print(json.dumps({"path": name, "ms": round(ms, 2), "vs_dynamic_int8": round(base / ms, 3)}))
    print(json.dumps({"lever0_max_abs_diff_vs_fp32": round(drift, 4), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
