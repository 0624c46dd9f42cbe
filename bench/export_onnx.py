"""The bench model for the ONNX peers: the Hugging Face directory exported to ONNX, laid out
as transformers.js reads a local model (config.json, tokenizer files, onnx/model.onnx).

    python bench/export_onnx.py HF_DIR OUT_DIR [MAX_LENGTH]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch
from transformers import BertForSequenceClassification


def main() -> None:
    hf, out = Path(sys.argv[1]), Path(sys.argv[2])
    model = BertForSequenceClassification.from_pretrained(hf, dtype=torch.float32).eval()
    (out / "onnx").mkdir(parents=True, exist_ok=True)
    ids = torch.randint(5, 100, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, 8:] = 0
    with torch.no_grad():
        torch.onnx.export(
            model,
            (ids, mask, torch.zeros_like(ids)),
            str(out / "onnx" / "model.onnx"),
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"],
            dynamic_axes={name: {0: "batch", 1: "sequence"} for name in ["input_ids", "attention_mask", "token_type_ids"]},
            opset_version=17,
            dynamo=False,
        )
    for name in ["config.json", "tokenizer.json"]:
        shutil.copy(hf / name, out / name)
    # Peers truncate where the bertgate bundle does, so all encode the same tokens.
    tokenizer_config = json.loads((hf / "tokenizer_config.json").read_text())
    if len(sys.argv) > 3:
        tokenizer_config["model_max_length"] = int(sys.argv[3])
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    print(f"{out}/onnx/model.onnx")


if __name__ == "__main__":
    main()
