"""Which features should the out-of-distribution gate read? A spike for the "Other" issue, lever 1.

The shipped gate reads the pooler output (tanh of a dense layer over [CLS]), which all-MiniLM-L6-v2,
the encoder the default model starts from, was never trained to produce: it was trained with mean
pooling of the last hidden states. This runs the default model once over a slice of the train split
(the fit set), the test split (in distribution) and both out-of-distribution sets, and scores each
feature choice with each score, fitted on the train slice only:

- features: pooler output (shipped), [CLS] of the last layer, mean-pooled last layer, mean-pooled
  embeddings and each layer;
- scores: Mahalanobis to the nearest class centre under one shared covariance (Lee et al. 2018),
  the same averaged over every layer's mean-pooled features, and normalised cosine k-nearest-neighbour
  distance (Sun et al. 2022, k = 10, against the fit slice).

AUROC of test against each OOD set is reported, as docs/evaluation.md reports the gate variants; a
choice made for the bundle would be made on a slice of train (the caveat in docs/evaluation.md).

    python bench/gate_features.py [--fit 8000] [--threads 2]
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
HELD = 1000  # train texts outside the fit slice: the per-layer distances are standardised on them
sys.path.insert(0, str(ROOT / "python"))

from bertgate_export.unbundle import unbundle  # noqa: E402


def read(path: Path, limit: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    if limit is not None and limit < len(rows):
        keep = np.random.default_rng(seed).choice(len(rows), limit, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    return [r["text"] for r in rows], [r.get("label", "") for r in rows]


@torch.no_grad()
def features(model, tokenizer, texts: list[str], max_length: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Every feature choice for every text, one forward pass per batch."""
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        res = model.bert(**enc, output_hidden_states=True)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        got = {"pooler": res.pooler_output, "cls_last": res.last_hidden_state[:, 0]}
        for layer, h in enumerate(res.hidden_states):
            got[f"mean_{layer}"] = (h * mask).sum(1) / mask.sum(1)
        for name, value in got.items():
            out.setdefault(name, []).append(value.float().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


class Mahalanobis:
    """Nearest class centre under one shared covariance, fitted on the fit slice."""

    def __init__(self, x: np.ndarray, labels: list[str]):
        names = sorted(set(labels))
        y = np.array([names.index(label) for label in labels])
        self.centres = np.stack([x[y == c].mean(0) for c in range(len(names))])
        centred = x - self.centres[y]
        cov = centred.T @ centred / len(x)
        self.precision = np.linalg.pinv(cov + 1e-6 * np.eye(cov.shape[0]) * np.trace(cov) / cov.shape[0])

    def score(self, x: np.ndarray) -> np.ndarray:
        d = x[:, None, :] - self.centres[None, :, :]
        return np.einsum("ncd,de,nce->nc", d, self.precision, d).min(1)


def knn(fit: np.ndarray, x: np.ndarray, k: int = 10) -> np.ndarray:
    """Cosine distance to the k-th nearest fit text (higher: further out)."""
    a = fit / np.linalg.norm(fit, axis=1, keepdims=True)
    b = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = b @ a.T
    return -np.sort(sims, axis=1)[:, -k]


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """P(an OOD text scores above an in-distribution one), ties counted half."""
    scores = np.concatenate([inside, outside])
    order = scores.argsort(kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks of ties
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]
    r_out = ranks[len(inside) :].sum()
    n_out, n_in = len(outside), len(inside)
    return float((r_out - n_out * (n_out + 1) / 2) / (n_out * n_in))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fit", type=int, default=8000, help="texts of the train split to fit on")
    parser.add_argument("--test", type=int, default=4000, help="texts of the test split (in distribution)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as hf:
        unbundle(ROOT / "models" / "default", hf)
        model = BertForSequenceClassification.from_pretrained(hf).float().eval()
        tokenizer = AutoTokenizer.from_pretrained(hf)
    max_length = json.loads((ROOT / "models" / "default" / "bundle.json").read_text())["max_length"]

    data = ROOT / "data"
    train_texts, train_labels = read(data / "debian" / "train.jsonl.gz", args.fit + HELD, seed=1)
    fit_texts, fit_labels, held_texts = train_texts[HELD:], train_labels[HELD:], train_texts[:HELD]
    test_texts, _ = read(data / "debian" / "test.jsonl.gz", args.test, seed=2)
    near_texts, _ = read(data / "debian" / "ood.jsonl.gz")
    far_texts, _ = read(data / "fortunes" / "far-ood.jsonl.gz")
    t0 = time.time()
    f = {
        name: features(model, tokenizer, texts, max_length)
        for name, texts in [
            ("fit", fit_texts),
            ("held", held_texts),
            ("test", test_texts),
            ("near", near_texts),
            ("far", far_texts),
        ]
    }
    print(
        f"features of {sum(len(v['pooler']) for v in f.values())} texts in {time.time() - t0:.0f} s "
        f"(fit {len(fit_texts)}, test {len(test_texts)}, near {len(near_texts)}, far {len(far_texts)})"
    )

    rows = []
    layers = sorted(k for k in f["fit"] if k.startswith("mean_"))
    for name in ["pooler", "cls_last", *layers]:
        maha = Mahalanobis(f["fit"][name], fit_labels)
        s = {split: maha.score(f[split][name]) for split in ("test", "near", "far")}
        rows.append((f"Mahalanobis, {name}", auroc(s["test"], s["near"]), auroc(s["test"], s["far"])))
        s = {split: knn(f["fit"][name], f[split][name]) for split in ("test", "near", "far")}
        rows.append((f"kNN cosine k=10, {name}", auroc(s["test"], s["near"]), auroc(s["test"], s["far"])))
    # Mahalanobis averaged over layers: each layer's distance standardised on train texts it was
    # not fitted on (in-sample distances are smaller), then summed.
    total = {split: 0.0 for split in ("test", "near", "far")}
    for name in layers:
        maha = Mahalanobis(f["fit"][name], fit_labels)
        ref = maha.score(f["held"][name])
        mu, sd = ref.mean(), ref.std() + 1e-9
        for split in total:
            total[split] = total[split] + (maha.score(f[split][name]) - mu) / sd
    rows.append(
        (
            "Mahalanobis averaged over every layer (mean-pooled)",
            auroc(total["test"], total["near"]),
            auroc(total["test"], total["far"]),
        )
    )

    print("| feature score | near AUROC | far AUROC |\n| --- | --- | --- |")
    for label, near, far in rows:
        print(f"| {label} | {near:.4f} | {far:.4f} |")


if __name__ == "__main__":
    main()
