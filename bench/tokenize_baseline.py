"""The baseline for bench/tokenize.ts: Python tokenizers (the pinned version) encoding the same
texts in the same chunks, truncating the same way, and taking out what bertgate takes out of
each encoding (ids, type ids, whether it was truncated). Prints one JSON object.

    python bench/tokenize_baseline.py TOKENIZER_JSON TEXTS_JSON --max-length N --chunk N --rounds N
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from tokenizers import Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("tokenizer")
    parser.add_argument("texts")
    parser.add_argument("--max-length", type=int, required=True)
    parser.add_argument("--chunk", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args()
    tok = Tokenizer.from_file(args.tokenizer)
    tok.enable_truncation(args.max_length)
    texts = json.load(open(args.texts))
    rates = []
    for _ in range(args.rounds + 1):
        start = time.perf_counter()
        rows = []
        for i in range(0, len(texts), args.chunk):
            for e in tok.encode_batch(texts[i : i + args.chunk]):
                rows.append((e.ids, e.type_ids, len(e.overflowing) > 0))
        rates.append(len(texts) / (time.perf_counter() - start))
    print(json.dumps({"texts_per_s": statistics.median(rates[1:]), "rayon": os.environ.get("RAYON_NUM_THREADS", "all")}))


if __name__ == "__main__":
    main()
