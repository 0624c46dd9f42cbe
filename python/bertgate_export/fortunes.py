"""Far out-of-distribution texts: short English texts that are not package descriptions, from
Debian's fortune cookie packages (fortunes, fortunes-min), fetched with apt (a registry this
project reaches). Quotes, jokes and aphorisms: nothing a classifier of package sections has
seen, unlike the held-out sections of the Debian dataset (near out-of-distribution).

    python -m bertgate_export.fortunes OUT_DIR [--limit 1000]

writes OUT_DIR/far-ood.jsonl.gz ({"text", "label": "fortune", "collection"}) and
OUT_DIR/manifest.json (the packages' versions and SHA-256, the collections, the seed).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import random
import subprocess
import tempfile
from pathlib import Path

PACKAGES = ("fortunes", "fortunes-min")
# Pictures made of characters, and the offensive collection fortunes keeps apart: not texts.
SKIPPED = {"art", "ascii-art"}
SEED = 20261203


def fortunes_of(path: Path) -> list[str]:
    """The fortunes of one collection file: entries between lines holding a single %."""
    text = path.read_text(encoding="utf-8", errors="replace")
    entries = [" ".join(e.split()) for e in text.split("\n%\n")]
    # Short, plain text: a sentence or a few, like a package description's length.
    return [e for e in entries if 40 <= len(e) <= 600 and e.isascii()]


def build(out: Path, limit: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=tmp, check=True, capture_output=True)
        debs = sorted(Path(tmp).glob("*.deb"))
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], check=True)
        packages = {deb.name: hashlib.sha256(deb.read_bytes()).hexdigest() for deb in debs}
        root = Path(tmp) / "x" / "usr" / "share" / "games" / "fortunes"
        rows = []
        for path in sorted(root.iterdir()):
            if path.suffix or path.name in SKIPPED or not path.is_file():
                continue  # .dat indexes, .u8 links
            rows += [{"text": t, "label": "fortune", "collection": path.name} for t in fortunes_of(path)]
    rng = random.Random(SEED)
    rng.shuffle(rows)
    rows = rows[:limit]
    with gzip.open(out / "far-ood.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    manifest = {
        "source": "Debian bookworm fortune cookie packages",
        "packages": packages,
        "collections": sorted({r["collection"] for r in rows}),
        "texts": len(rows),
        "seed": SEED,
        "filter": "40 to 600 ASCII characters; art and ascii-art left out",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--limit", type=int, default=1000)
    args = parser.parse_args()
    print(json.dumps(build(Path(args.out), args.limit), indent=2))
