"""Random-weight bundles with real geometries, for benchmarks (weights do not change speed).
The Hugging Face model directory is kept beside the bundle, as OUT_DIR-hf, for the peers
that load it (the Python pipeline, the ONNX export).

    python bench/make_model.py OUT_DIR {bert-base|small} [--max-length N]
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bertgate_export.export import export_bundle
from bertgate_export.testmodels import ModelSpec, build_model_dir

GEOMETRIES = {
    # BERT-base: 12 layers, hidden 768, 12 heads, 30522 embeddings; 50 labels as in the
    # product's motivating case.
    "bert-base": ModelSpec(
        labels=[f"label_{i:02d}" for i in range(50)],
        hidden=768,
        heads=12,
        layers=12,
        max_positions=512,
        vocab_size=2000,
        model_vocab_size=30522,
    ),
    "small": ModelSpec(labels=[f"label_{i:02d}" for i in range(50)], hidden=256, heads=4, layers=4, max_positions=512),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out_dir")
    parser.add_argument("geometry", choices=GEOMETRIES)
    parser.add_argument("--max-length", type=int, default=128)
    args = parser.parse_args()
    model_dir = Path(args.out_dir + "-hf")
    shutil.rmtree(model_dir, ignore_errors=True)
    build_model_dir(GEOMETRIES[args.geometry], model_dir)
    manifest = export_bundle(model_dir, args.out_dir, max_length=args.max_length, random_weights=True)
    print(f"{args.out_dir}: {args.geometry}, max length {manifest['max_length']}, parity {manifest['parity']}")


if __name__ == "__main__":
    main()
