"""The linear baseline the default model must beat: TF-IDF (word 1-2 grams) + logistic
regression on the same split, with the out-of-distribution figures of its scores.

    python -m bertgate_export.baseline DATA_DIR  -> prints one JSON object
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from scipy.special import logsumexp, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from .dataset import read_split


def ood_figures(id_scores: np.ndarray, ood_scores: np.ndarray) -> dict:
    """Scores where higher means more in-distribution: AUROC, and FPR at 95% TPR."""
    y = np.r_[np.ones(len(id_scores)), np.zeros(len(ood_scores))]
    s = np.r_[id_scores, ood_scores]
    threshold = np.quantile(id_scores, 0.05)  # keeps 95% of in-distribution texts
    return {"auroc": float(roc_auc_score(y, s)), "fpr95": float(np.mean(ood_scores >= threshold))}


def main(data: Path) -> dict:
    train, test, ood = (read_split(data / f"{n}.jsonl.gz") for n in ("train", "test", "ood"))
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=300_000)
    x_train = vectorizer.fit_transform([r["text"] for r in train])
    clf = LogisticRegression(C=10.0, max_iter=300)
    clf.fit(x_train, [r["label"] for r in train])
    logits = clf.decision_function(vectorizer.transform([r["text"] for r in test]))
    ood_logits = clf.decision_function(vectorizer.transform([r["text"] for r in ood]))
    truth = [r["label"] for r in test]
    predicted = clf.classes_[logits.argmax(1)]
    scores = {
        "max_probability": (softmax(logits, 1).max(1), softmax(ood_logits, 1).max(1)),
        "negative_energy": (logsumexp(logits, 1), logsumexp(ood_logits, 1)),
    }
    return {
        "model": "TF-IDF (1-2 grams, sublinear tf, min_df 2) + logistic regression (C=10)",
        "accuracy": accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, average="macro"),
        "ood": {name: ood_figures(i, o) for name, (i, o) in scores.items()},
        "test": len(test),
        "ood_texts": len(ood),
    }


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1])), indent=2))
