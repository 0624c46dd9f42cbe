"""The stand-in default bundle for `npm run demo` and `bertgate classify` without --model:
random weights (bundle.json says so, and the demo prints it) until a trained default model
ships, with a fixed 0.5 threshold in calibration.json.

Random BERT weights at the usual initialisation (std 0.02) give almost the same distribution
for every text; a wider initialisation makes the stand-in respond to its input, and the seed
is chosen so the demo texts show both accepted labels and "Other".

    python -m bertgate_export.default_model OUT_DIR DEMO_TEXTS_FILE
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from .export import export_bundle
from .testmodels import ModelSpec, build_model_dir

LABELS = ["admin", "devel", "doc", "games", "graphics", "libs", "net", "python", "sound", "text", "utils", "web"]
DEMO_THRESHOLD = 0.5


def accepted_share(model_dir: Path, texts: list[str]) -> float:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    top = torch.softmax(logits, dim=-1).max(dim=-1).values
    return (top >= DEMO_THRESHOLD).float().mean().item()


def build(out: Path, demo_texts: Path) -> None:
    texts = [t for t in demo_texts.read_text(encoding="utf-8").splitlines() if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(7, 50):
            spec = ModelSpec(
                labels=LABELS,
                hidden=64,
                heads=4,
                layers=2,
                max_positions=128,
                vocab_size=2000,
                seed=seed,
                extra={"initializer_range": 0.6},
            )
            model_dir = build_model_dir(spec, Path(tmp) / f"seed{seed}")
            share = accepted_share(model_dir, texts)
            if 0.3 <= share <= 0.8:
                break
        export_bundle(model_dir, out, random_weights=True)
    calibration = {"threshold": DEMO_THRESHOLD, "note": "not fitted: a fixed threshold for the random-weight stand-in"}
    (out / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    print(f"default model: {out} (random weights, seed {seed}, {share:.0%} of the demo texts above {DEMO_THRESHOLD})")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
