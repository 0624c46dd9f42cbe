"""The Debian dataset: package descriptions labelled by Section, bookworm main.

- Split by *source* package (all binaries of a source land in one split), seeded, into train /
  calibration / test (70 / 15 / 15).
- Sections with fewer than MIN_SOURCES source packages are dropped (too few to split).
- OOD_SECTIONS are held out whole: never trained on, they are the texts that should come out as
  "Other" (ood.jsonl, split by source into a calibration and a test half).
- A description that also appears verbatim in another split is dropped from the later split
  (train keeps it), so no test text was seen in training.

    python -m bertgate_export.dataset OUT_DIR
writes OUT_DIR/{train,calibration,test,ood}.jsonl.gz ({"text", "label", "source", "package"})
and OUT_DIR/manifest.json (what was read: release date and list hashes; counts; seed).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

from .debian import read_packages

SEED = 20261126
MIN_SOURCES = 20
# Held out whole as out-of-distribution: topics no in-distribution section covers.
OOD_SECTIONS = ["hamradio", "electronics", "tex", "gnustep"]
SPLITS = (("train", 0.70), ("calibration", 0.15), ("test", 0.15))


def split_of(source: str, seed: int) -> str:
    """A stable assignment of a source package to a split (independent of list order)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{source}".encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if h < edge:
            return name
    return SPLITS[-1][0]


def build(out: Path, seed: int = SEED) -> dict:
    packages, read = read_packages()
    sources = defaultdict(set)
    for p in packages:
        sources[p.section].add(p.source)
    kept = {s for s, srcs in sources.items() if len(srcs) >= MIN_SOURCES and s not in OOD_SECTIONS}
    rows: dict[str, list[dict]] = {name: [] for name, _ in SPLITS}
    rows["ood"] = []
    for p in packages:
        row = {"text": p.text, "label": p.section, "source": p.source, "package": p.package}
        if p.section in OOD_SECTIONS:
            rows["ood"].append(row)
        elif p.section in kept:
            rows[split_of(p.source, seed)].append(row)

    # Verbatim duplicates across splits: the first split (train, then calibration) keeps them.
    seen: set[str] = set()
    dropped = Counter()
    for name in ("train", "calibration", "test", "ood"):
        texts = {r["text"] for r in rows[name]}
        if name != "train":
            before = len(rows[name])
            rows[name] = [r for r in rows[name] if r["text"] not in seen]
            dropped[name] = before - len(rows[name])
        seen |= texts

    out.mkdir(parents=True, exist_ok=True)
    for name, items in rows.items():
        random.Random(seed).shuffle(items)
        with gzip.open(out / f"{name}.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
            for r in items:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    manifest = {
        "source": "Debian package descriptions (Packages + Translation-en), main component",
        "read": read,
        "seed": seed,
        "split": "by source package, sha256(seed:source) -> 70/15/15",
        "min_sources_per_section": MIN_SOURCES,
        "ood_sections": OOD_SECTIONS,
        "dropped_sections": sorted(set(sources) - kept - set(OOD_SECTIONS)),
        "labels": sorted(kept),
        "counts": {name: len(items) for name, items in rows.items()},
        "dropped_cross_split_duplicates": dict(dropped),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_split(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


if __name__ == "__main__":
    m = build(Path(sys.argv[1]))
    print(json.dumps({k: m[k] for k in ("counts", "dropped_cross_split_duplicates", "dropped_sections")}))
    print(f"{len(m['labels'])} labels, OOD {m['ood_sections']}")
