"""bertgate bundle -> Hugging Face model directory, so an existing bundle can be exported again
(with --features, or --quantize int8) when the checkpoint it came from is gone.

    python -m bertgate_export.unbundle BUNDLE_DIR HF_DIR

A traced BertForSequenceClassification keeps its parameters under the eager module's names,
so its state dict loads into a freshly built model of the bundle's config.json. The result is
checked against the bundle itself on random batches of several shapes: the recovered model
must give the bundle's logits, or nothing is written.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification

from .export import ExportError, random_batch

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def unbundle(bundle_dir: str | Path, out_dir: str | Path, tolerance: float = 1e-5) -> float:
    """Writes the HF directory; returns the largest |logit difference| against the bundle."""
    bundle_dir, out_dir = Path(bundle_dir), Path(out_dir)
    manifest = json.loads((bundle_dir / "bundle.json").read_text())
    if manifest.get("quantization"):
        # int8 weights cannot be turned back into the fp32 ones they were rounded from.
        raise ExportError(f"{bundle_dir} is an int8 bundle: unbundle needs one with float weights")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError(f"{out_dir} is not empty")
    config = BertConfig.from_pretrained(bundle_dir)
    traced = torch.jit.load(str(bundle_dir / "model.pt"), map_location="cpu").float().eval()
    # A format-2 bundle wraps the classifier as `model`; format 1 is the classifier itself.
    state = {k.removeprefix("model."): v for k, v in traced.state_dict().items()}
    model = BertForSequenceClassification(config).eval()
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Buffers transformers builds itself (position and default type ids), not weights.
    buffers = ("position_ids", "token_type_ids")
    missing = [k for k in missing if not k.endswith(buffers)]
    unexpected = [k for k in unexpected if not k.endswith(buffers)]
    if missing or unexpected:
        raise ExportError(
            f"{bundle_dir}/model.pt does not hold a BertForSequenceClassification of its config.json "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    worst = 0.0
    generator = torch.Generator().manual_seed(3)
    length = int(manifest["max_length"])
    with torch.no_grad():
        for batch, t in ((1, 1), (2, 7), (4, length), (8, max(1, length // 2))):
            ids, mask, types = random_batch(generator, batch, t, config.vocab_size, config.type_vocab_size)
            output = traced(ids, mask, types)
            want = output["logits"] if isinstance(output, dict) else output
            got = model(input_ids=ids, attention_mask=mask, token_type_ids=types).logits
            worst = max(worst, (got - want).abs().max().item())
    if not worst <= tolerance:
        raise ExportError(f"the recovered model differs from {bundle_dir} by {worst:.3g} (tolerance {tolerance:g})")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    for name in TOKENIZER_FILES:
        if (bundle_dir / name).is_file():
            shutil.copyfile(bundle_dir / name, out_dir / name)
    return worst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bertgate_export.unbundle", description=__doc__)
    parser.add_argument("bundle_dir")
    parser.add_argument("out_dir")
    args = parser.parse_args(argv)
    try:
        worst = unbundle(args.bundle_dir, args.out_dir)
    except ExportError as error:
        print(f"bertgate_export.unbundle: {error}", file=sys.stderr)
        return 1
    print(f"wrote {args.out_dir}: logits within {worst:.3g} of {args.bundle_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
