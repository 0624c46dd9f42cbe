"""The baseline for bench/forward.ts: Python torch running the same TorchScript file, frozen,
on the same token ids and thread count, timed the same way (median of N after warm-up).

    python bench/torch_baseline.py MODEL_PT IDS_FILE --threads N --iterations N --batches 1,32 --seq-len L
IDS_FILE holds int32 ids, [max(batches) x seq-len] row-major. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("ids")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True)
    parser.add_argument("--batches", required=True)
    parser.add_argument("--seq-len", type=int, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    batches = [int(b) for b in args.batches.split(",")]
    all_ids = torch.from_numpy(np.fromfile(args.ids, dtype=np.int32).astype(np.int64)).view(-1, args.seq_len)

    start = time.perf_counter()
    # In fp32, as the engine runs a bundle whose weights are stored in float16 (its default dtype),
    # on the x86 quantized engine the engine sets for int8 bundles.
    torch.backends.quantized.engine = "x86"
    module = torch.jit.freeze(torch.jit.load(args.model).float().eval())
    load_ms = (time.perf_counter() - start) * 1000

    forward = {}
    with torch.inference_mode():
        for batch in batches:
            ids = all_ids[:batch].contiguous()
            mask, types = torch.ones_like(ids), torch.zeros_like(ids)
            for _ in range(3):
                module(ids, mask, types)
            times = []
            for _ in range(args.iterations):
                t0 = time.perf_counter()
                module(ids, mask, types)
                times.append((time.perf_counter() - t0) * 1000)
            forward[str(batch)] = statistics.median(times)
    print(json.dumps({"load_ms": load_ms, "forward_ms": forward, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
