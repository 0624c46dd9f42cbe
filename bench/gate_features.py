"""Which features should the out-of-distribution gate read? A spike for the "Other" issue, lever 1.

The shipped gate reads the pooler output (tanh of a dense layer over [CLS]), which all-MiniLM-L6-v2,
the encoder the default model starts from, was never trained to produce: it was trained with mean
pooling of the last hidden states. This runs the default model once over a slice of the train split
(the fit set), the test split (in distribution) and both out-of-distribution sets, and scores each
feature choice with each score, fitted on the train slice only:

- features: pooler output (shipped), [CLS] of the last layer, mean-pooled last layer, mean-pooled
  embeddings and each layer, and the pooler output beside the mean-pooled last layer (or every
  layer's mean), one vector: what the gate would read from a bundle returning them concatenated;
- scores: Mahalanobis to the nearest class centre under one shared covariance (Lee et al. 2018),
  the same averaged over every layer's mean-pooled features, and normalised cosine k-nearest-neighbour
  distance (Sun et al. 2022, k = 10, against the fit slice).

- logit scores: the energy and the max softmax probability (of the classifier on the pooler
  output, as the bundle serves it), ViM (Wang et al. 2022: the norm of the pooler output, from
  the point where the logits vanish, outside its 64 principal directions on the fit slice, scaled
  to the logits, plus the energy), and
  Mahalanobis on the mean-pooled last layer plus energy (each standardised on held train texts).

Two columns decide and inform: a train-only proxy, and the real sets. The proxy (the only one a
choice may be made on: the issue forbids choosing on test or on the out-of-distribution sets)
holds out five in-distribution sections, drawn by a seed before any score was seen: every score
is fitted on the fit slice less those sections, and scores held train texts of the kept sections
(in distribution) against train texts of the held-out ones (out). The model was trained on those
sections, so the proxy flatters features that separate trained sections (docs/evaluation.md);
it is still the only fair judge. AUROC of test against each OOD set is reported beside it.

    python bench/gate_features.py [--bundle models/default] [--fit 8000] [--test 4000] [--threads 2]
        [--cache FILE.npz]
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, BertForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
HELD = 1000  # train texts outside the fit slice: the per-layer distances are standardised on them
DATA_FILES = ("debian/train.jsonl.gz", "debian/test.jsonl.gz", "debian/ood.jsonl.gz", "fortunes/far-ood.jsonl.gz")
sys.path.insert(0, str(ROOT / "python"))

from bertgate_export.unbundle import unbundle  # noqa: E402

# The second proxy: another kind of text than package descriptions, from files every Debian
# machine has and no evaluation set comes from (the licences' paragraphs: legal prose).
LICENSES = sorted(Path("/usr/share/common-licenses").glob("*")) if Path("/usr/share/common-licenses").is_dir() else []


def other_kind_of_text(limit: int = 600, seed: int = 4) -> list[str]:
    """Paragraphs of 10 to 80 words from the licence files, at most `limit`, drawn by a seed."""
    paragraphs: list[str] = []
    for path in LICENSES:
        if path.is_file():
            for block in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
                words = block.split()
                if 10 <= len(words) <= 80:
                    paragraphs.append(" ".join(words))
    paragraphs = sorted(set(paragraphs))
    if len(paragraphs) > limit:
        keep = np.random.default_rng(seed).choice(len(paragraphs), limit, replace=False)
        paragraphs = [paragraphs[i] for i in sorted(keep)]
    if not paragraphs:
        raise SystemExit("no licence texts under /usr/share/common-licenses: the second proxy needs them")
    return paragraphs


def read(path: Path, limit: int | None = None, seed: int = 0) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in gzip.open(path, "rt", encoding="utf-8")]
    if limit is not None and limit < len(rows):
        keep = np.random.default_rng(seed).choice(len(rows), limit, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    return [r["text"] for r in rows], [r.get("label", "") for r in rows]


@torch.no_grad()
def features(model, tokenizer, texts: list[str], max_length: int, batch: int = 64) -> dict[str, np.ndarray]:
    """Every feature choice for every text, and the logits, one forward pass per batch."""
    out: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(texts), batch):
        enc = tokenizer(texts[i : i + batch], truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        res = model.bert(**enc, output_hidden_states=True)
        mask = enc["attention_mask"].unsqueeze(-1).float()
        got = {
            "pooler": res.pooler_output,
            "cls_last": res.last_hidden_state[:, 0],
            "logits": model.classifier(res.pooler_output),
        }
        for layer, h in enumerate(res.hidden_states):
            got[f"mean_{layer}"] = (h * mask).sum(1) / mask.sum(1)
        for name, value in got.items():
            out.setdefault(name, []).append(value.float().numpy())
    return {name: np.concatenate(parts) for name, parts in out.items()}


def energy(logits: np.ndarray) -> np.ndarray:
    """The energy (Liu et al. 2020), minus the logsumexp of the logits: higher further out, as every
    score here."""
    top = logits.max(1, keepdims=True)
    return -(top[:, 0] + np.log(np.exp(logits - top).sum(1)))


def max_probability(logits: np.ndarray) -> np.ndarray:
    top = logits.max(1, keepdims=True)
    p = np.exp(logits - top)
    return -(p.max(1) / p.sum(1))


class ViM:
    """Virtual-logit matching (Wang et al. 2022) on the pooler output: from the origin where the
    XX, the residual outside the fit slice's principal
        directions, scaled so its mean matches the mean max logit, minus the logsumexp of the logits
        (higher further out)."""

    def __init__(self, x: np.ndarray, logits: np.ndarray, weight: np.ndarray, bias: np.ndarray, dim: int = 64):
        x = x.astype(np.float64)
        self.origin = -np.linalg.pinv(weight.astype(np.float64)) @ bias.astype(np.float64)  # W o + b = 0
        _, _, vt = np.linalg.svd(x - self.origin, full_matrices=False)
        self.null = vt[dim:].T
        self.alpha = logits.max(1).mean() / self.residual(x).mean()

    def residual(self, x: np.ndarray) -> np.ndarray:
        return np.linalg.norm((x.astype(np.float64) - self.origin) @ self.null, axis=1)

    def score(self, x: np.ndarray, logits: np.ndarray) -> np.ndarray:
        return self.alpha * self.residual(x) + energy(logits)


class Mahalanobis:
    """Nearest class centre under one shared covariance, fitted on the fit slice; computed in the
    whitened space (x W, W = V diag(1 / sqrt(lambda)) of the covariance's eigendecomposition), so
    scoring costs n x d x d, not n x classes x d x d."""

    def __init__(self, x: np.ndarray, labels: list[str], dim: int | None = None):
        """dim: keep only the covariance's `dim` least-variance directions, as the engine's gate
        does (lib/calibration/gate.ts); None keeps every direction."""
        x = x.astype(np.float64)  # the expanded distance below cancels: fp32 features lose digits
        names = sorted(set(labels))
        y = np.array([names.index(label) for label in labels])
        centres = np.stack([x[y == c].mean(0) for c in range(len(names))])
        centred = x - centres[y]
        cov = centred.T @ centred / len(x)
        values, vectors = np.linalg.eigh(cov + 1e-6 * np.eye(cov.shape[0]) * np.trace(cov) / cov.shape[0])
        if dim is not None:  # eigh sorts the values ascending
            values, vectors = values[:dim], vectors[:, :dim]
        self.whiten = vectors / np.sqrt(values)
        self.centres = centres @ self.whiten

    def score(self, x: np.ndarray) -> np.ndarray:
        z = x.astype(np.float64) @ self.whiten
        d = (z * z).sum(1, keepdims=True) - 2 * z @ self.centres.T + (self.centres * self.centres).sum(1)
        return d.min(1)


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


def scores(
    fit: dict, fit_labels: list[str], held: dict, sets: dict[str, dict], head: tuple[np.ndarray, np.ndarray]
) -> dict[str, dict[str, np.ndarray]]:
    """Every score, fitted on `fit` (standardised on `held` where two are summed), of each set;
    `head` is the classifier's weight and bias (ViM's origin)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    layers = sorted((k for k in fit if k.startswith("mean_")), key=lambda k: int(k.split("_")[1]))
    last = layers[-1]
    # One gate over two features side by side: what the engine's gate would read if the bundle
    # returned them concatenated (its one Mahalanobis over the wider vector; no engine change).
    for part in (fit, held, *sets.values()):
        part["pooler+mean_last"] = np.concatenate([part["pooler"], part[last]], 1)
        part["pooler+mean_all"] = np.concatenate([part["pooler"], *(part[n] for n in layers)], 1)
    for name in ["pooler", "cls_last", *layers, "pooler+mean_last", "pooler+mean_all"]:
        maha = Mahalanobis(fit[name], fit_labels)
        out[f"Mahalanobis, {name}"] = {k: maha.score(v[name]) for k, v in sets.items()}
        out[f"kNN cosine k=10, {name}"] = {k: knn(fit[name], v[name]) for k, v in sets.items()}
    # As the engine serves it: the 128 (calibrate's default) or 256 least-variance directions only.
    # Each layer's mean too: the exporter serves any one (--feature-kind mean:K).
    for name in ("pooler", "pooler+mean_last", "pooler+mean_all", *layers):
        for dim in (128, 256):
            maha = Mahalanobis(fit[name], fit_labels, dim)
            out[f"Mahalanobis, {name}, {dim} least-variance directions"] = {
                k: maha.score(v[name]) for k, v in sets.items()
            }
    # Mahalanobis averaged over layers: each layer's distance standardised on train texts it was
    # not fitted on (in-sample distances are smaller), then summed.
    total = {k: 0.0 for k in sets}
    for name in layers:
        maha = Mahalanobis(fit[name], fit_labels)
        ref = maha.score(held[name])
        for k, v in sets.items():
            total[k] = total[k] + (maha.score(v[name]) - ref.mean()) / (ref.std() + 1e-9)
    out["Mahalanobis averaged over every layer (mean-pooled)"] = total
    out["energy"] = {k: energy(v["logits"]) for k, v in sets.items()}
    out["max probability"] = {k: max_probability(v["logits"]) for k, v in sets.items()}
    vim = ViM(fit["pooler"], fit["logits"], *head)
    out["ViM, pooler (64 principal directions)"] = {k: vim.score(v["pooler"], v["logits"]) for k, v in sets.items()}
    maha = Mahalanobis(fit[last], fit_labels)
    parts = [(lambda v: maha.score(v[last])), (lambda v: energy(v["logits"]))]
    combined = {k: 0.0 for k in sets}
    for part in parts:
        ref = part(held)
        for k, v in sets.items():
            combined[k] = combined[k] + (part(v) - ref.mean()) / (ref.std() + 1e-9)
    out[f"Mahalanobis, {last}, plus energy"] = combined
    return out


def subset(f: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in f.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bundle", default=str(ROOT / "models" / "default"))
    parser.add_argument("--fit", type=int, default=8000, help="texts of the train split to fit on")
    parser.add_argument("--test", type=int, default=4000, help="texts of the test split (in distribution)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--proxy-sections", type=int, default=5)
    parser.add_argument("--proxy-seed", type=int, default=3)
    parser.add_argument("--cache", default=None, help="keep the features here (.npz) for the next run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    bundle = Path(args.bundle)
    with tempfile.TemporaryDirectory() as hf:
        unbundle(bundle, hf)
        model = BertForSequenceClassification.from_pretrained(hf).float().eval()
        tokenizer = AutoTokenizer.from_pretrained(hf)
    head = (model.classifier.weight.detach().numpy(), model.classifier.bias.detach().numpy())
    max_length = json.loads((bundle / "bundle.json").read_text())["max_length"]

    data = ROOT / "data"
    train_texts, train_labels = read(data / "debian" / "train.jsonl.gz", args.fit + HELD, seed=1)
    fit_texts, fit_labels, held_texts = train_texts[HELD:], train_labels[HELD:], train_texts[:HELD]
    held_labels = train_labels[:HELD]
    test_texts, _ = read(data / "debian" / "test.jsonl.gz", args.test, seed=2)
    near_texts, _ = read(data / "debian" / "ood.jsonl.gz")
    far_texts, _ = read(data / "fortunes" / "far-ood.jsonl.gz")
    other_texts = other_kind_of_text()
    t0 = time.time()
    sets = [("fit", fit_texts), ("held", held_texts), ("test", test_texts), ("near", near_texts), ("far", far_texts)]
    sets.append(("other", other_texts))
    # The forward passes are most of the time: --cache keeps their features for the next run of
    # the same bundle and slices (the file names them, so another bundle's cache is not read).
    # The key names what the features depend on: the bundle's files and the data's, by size and
    # time, and the slices.
    inputs = [bundle / "model.pt", bundle / "bundle.json", *(data / d for d in DATA_FILES), *LICENSES]
    key = "|".join([*(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in inputs), str(args.fit)])
    key += f"|{args.test}"
    cache = Path(args.cache) if args.cache else None
    if cache and cache.suffix != ".npz":
        raise SystemExit(f"--cache {cache}: the file must end in .npz (numpy adds it otherwise)")
    f = None
    if cache and cache.exists():
        with np.load(cache, allow_pickle=False) as stored:
            if "key" in stored.files and str(stored["key"]) == key:
                f = {n: {k.split("/", 1)[1]: stored[k] for k in stored.files if k.startswith(n + "/")} for n, _ in sets}
    if f is None:
        f = {name: features(model, tokenizer, texts, max_length) for name, texts in sets}
        if cache:
            np.savez(cache, key=key, **{f"{name}/{k}": v for name, part in f.items() for k, v in part.items()})
    print(
        f"features of {sum(len(v['pooler']) for v in f.values())} texts in {time.time() - t0:.0f} s "
        f"(fit {len(fit_texts)}, test {len(test_texts)}, near {len(near_texts)}, far {len(far_texts)})",
        flush=True,
    )

    # The proxy, on train alone: sections drawn before any score was seen play the unknown topics.
    sections = sorted(set(fit_labels))
    out_sections = set(np.random.default_rng(args.proxy_seed).choice(sections, args.proxy_sections, replace=False))
    fit_in = np.array([label not in out_sections for label in fit_labels])
    held_in = np.array([label not in out_sections for label in held_labels])
    proxy_fit = subset(f["fit"], fit_in)
    proxy_fit_labels = [label for label, keep in zip(fit_labels, fit_in, strict=True) if keep]
    # Standardising sets are in-distribution held texts; half of them stand for the in-distribution
    # side of the proxy, the other half standardise, so no text is both.
    held_idx = np.flatnonzero(held_in)
    proxy_ref, proxy_inside = held_idx[::2], held_idx[1::2]
    outside = {k: np.concatenate([f["fit"][k][~fit_in], f["held"][k][~held_in]]) for k in f["fit"]}
    proxy = scores(
        proxy_fit,
        proxy_fit_labels,
        subset(f["held"], proxy_ref),
        {"inside": subset(f["held"], proxy_inside), "outside": outside, "other": f["other"]},
        head,
    )
    real = scores(f["fit"], fit_labels, f["held"], {k: f[k] for k in ("test", "near", "far")}, head)
    print(
        f"proxy: held-out sections {sorted(out_sections)} ({len(outside['pooler'])} texts) against "
        f"{len(proxy_inside)} held train texts of the others"
    )
    print(f"other kind of text: {len(other_texts)} paragraphs of {len(LICENSES)} licence files")
    print(
        "| feature score | proxy: held-out sections | proxy: licences | proxies' mean | near AUROC | far AUROC |\n"
        "| --- | --- | --- | --- | --- | --- |"
    )
    rows = []
    for label in real:
        sections_proxy = auroc(proxy[label]["inside"], proxy[label]["outside"])
        other_proxy = auroc(proxy[label]["inside"], proxy[label]["other"])
        near = auroc(real[label]["test"], real[label]["near"])
        far = auroc(real[label]["test"], real[label]["far"])
        rows.append((label, sections_proxy, other_proxy, (sections_proxy + other_proxy) / 2, near, far))
    for label, a, b, mean, near, far in rows:
        print(f"| {label} | {a:.4f} | {b:.4f} | {mean:.4f} | {near:.4f} | {far:.4f} |")
    chosen = max(rows, key=lambda r: r[3])
    print(f"chosen by the proxies' mean (train and licences only): {chosen[0]}")
    # The rule docs/evaluation.md wrote down before a candidate was measured: the proxies' mean,
    # among the scores the engine's gate computes (Mahalanobis, on every direction or on the 128 or
    # 256 least-variance ones) over the features the exporter serves.
    served = [r for r in rows if served_as(r[0]) is not None]
    if served:
        best = max(served, key=lambda r: r[3])
        kind, dim, feature = served_as(best[0])
        # Every direction is the features' width, printed as the number calibrate needs (its
        # --gate-dim defaults to 128, not to the width).
        dim = dim or f["fit"][feature].shape[1]
        print(f"chosen among what the engine serves: {best[0]} (--feature-kind {kind} --gate-dim {dim})")


def served_as(label: str) -> tuple[str, int | None, str] | None:
    """The exporter's --feature-kind and calibrate's --gate-dim that serve a Mahalanobis row, with
    the row's feature name, or None for a score the engine does not compute (kNN, energy, sums of
    scores, every layer's mean)."""
    m = re.fullmatch(r"Mahalanobis, (pooler|pooler\+mean_last|mean_(\d+))(?:, (\d+) least-variance directions)?", label)
    if m is None:
        return None
    kind = {"pooler": "pooler", "pooler+mean_last": "pooler+mean"}.get(m[1], f"mean:{m[2]}")
    return kind, int(m[3]) if m[3] else None, m[1]


if __name__ == "__main__":
    main()
