"""The stand-in default bundle for `npm run demo` and `bertgate classify` without --model:
random weights (bundle.json says so, and the demo prints it), with the classifier head scaled
so that about half of the demo texts clear a 0.5 threshold and the other half show "Other".

    python -m bertgate_export.default_model OUT_DIR DEMO_TEXTS_FILE
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
from transformers import AutoTokenizer, BertForSequenceClassification

from .export import export_bundle
from .testmodels import ModelSpec, build_model_dir

LABELS = ["admin", "devel", "doc", "games", "graphics", "libs", "net", "python", "sound", "text", "utils", "web"]
DEMO_THRESHOLD = 0.5


def head_scale(model_dir: Path, texts: list[str]) -> float:
    """The scale putting the median top probability of the demo texts at the threshold.

    The head's bias starts at zero, so scaling its weights scales the logits exactly."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        enc = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    best = 1.0
    for step in range(1, 400):
        scale = step * 0.25
        top = torch.softmax(logits * scale, dim=-1).max(dim=-1).values
        accepted = (top >= DEMO_THRESHOLD).float().mean().item()
        best = scale
        if accepted >= 0.5:
            break
    return best


def build(out: Path, demo_texts: Path) -> None:
    texts = [t for t in demo_texts.read_text(encoding="utf-8").splitlines() if t.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        spec = ModelSpec(labels=LABELS, hidden=64, heads=4, layers=2, max_positions=128, vocab_size=2000, seed=7)
        model_dir = build_model_dir(spec, Path(tmp) / "default")
        scale = head_scale(model_dir, texts)
        model = BertForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32)
        with torch.no_grad():
            model.classifier.weight.mul_(scale)
        model.save_pretrained(model_dir)
        export_bundle(model_dir, out, random_weights=True)
    (out / "calibration.json").write_text(
        '{\n  "threshold": %s,\n  "note": "not fitted: a fixed threshold for the random-weight stand-in"\n}\n' % DEMO_THRESHOLD
    )
    print(f"default model: {out} (random weights, head scale {scale:g})")


if __name__ == "__main__":
    build(Path(sys.argv[1]), Path(sys.argv[2]))
