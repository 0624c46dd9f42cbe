"""python -m bertgate_export MODEL_DIR OUT_DIR [--max-length N] [--tolerance T] [--quantize int8]
[--weights float16] [--features] [--feature-kind pooler|pooler+mean|mean:K]"""

from __future__ import annotations

import argparse
import json
import sys

from .export import FEATURE_KINDS, ExportError, export_bundle
from .quantize import RECIPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bertgate_export", description=__doc__)
    parser.add_argument(
        "model_dir", help="a Hugging Face model directory (save_pretrained output) with a fast tokenizer"
    )
    parser.add_argument("out_dir", help="where to write the bundle")
    parser.add_argument("--max-length", type=int, default=None, help="cap on tokens per text (default: the model's)")
    parser.add_argument("--tolerance", type=float, default=1e-5, help="max |trace - eager| accepted (default 1e-5)")
    parser.add_argument(
        "--quantize",
        choices=list(RECIPES),
        default=None,
        help="int8 Linear layers (CPU only): every encoder layer runs the engine's bertgate::linear_int8",
    )
    parser.add_argument(
        "--weights", choices=["float32", "float16"], default="float32", help="how the other weights are stored"
    )
    parser.add_argument(
        "--features", action="store_true", help="return the gate's features too (for the out-of-distribution gate)"
    )
    parser.add_argument(
        "--feature-kind",
        default=None,
        metavar="|".join(FEATURE_KINDS),
        help="which features (implies --features): the pooled vector (pooler, the default), it beside the last "
        "layer's mean over the tokens (pooler+mean), or the mean of hidden state K alone (mean:K; 0 the embeddings)",
    )
    args = parser.parse_args(argv)
    try:
        manifest = export_bundle(
            args.model_dir,
            args.out_dir,
            max_length=args.max_length,
            tolerance=args.tolerance,
            quantize=args.quantize,
            weights=args.weights,
            # is not None: an empty --feature-kind is refused by the exporter, not read as no features
            features=args.feature_kind if args.feature_kind is not None else args.features,
        )
    except ExportError as error:
        print(f"bertgate_export: {error}", file=sys.stderr)
        return 1
    print(json.dumps(manifest, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
