"""Debian package descriptions from the local apt lists: real English text, offline.

The lists come from `apt-get update -o Acquire::Languages=en` (Packages for the section and
source of each binary package, Translation-en for its short and long description). Every
build records what it read: the release file's date and the hash of each list.

    python -m bertgate_export.debian sample OUT.jsonl [--limit N] [--seed S]
writes {"package", "source", "section", "text"} lines, and OUT.jsonl.manifest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

LISTS = Path("/var/lib/apt/lists")


@dataclass
class PackageText:
    package: str
    source: str
    section: str
    text: str


def _read_list(path: Path) -> str:
    # apt keeps its lists compressed (lz4 here); apt-helper reads whatever apt wrote.
    return subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True, text=True
    ).stdout


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields:
            yield fields


def _description(raw: str) -> str:
    """Short description, then the long one as paragraphs (' .' lines separate them)."""
    short, _, long = raw.partition("\n")
    lines = [line[1:] if line.startswith(" ") else line for line in long.splitlines()]
    paragraphs = "\n".join("" if line.strip() == "." else line.strip() for line in lines)
    return (short.strip() + "\n" + paragraphs).strip()


def lists(suite: str = "bookworm") -> tuple[Path, Path, Path]:
    stem = f"deb.debian.org_debian_dists_{suite}"
    packages = next(LISTS.glob(f"{stem}_main_binary-amd64_Packages*"), None)
    translations = next(LISTS.glob(f"{stem}_main_i18n_Translation-en*"), None)
    release = LISTS / f"{stem}_InRelease"
    if packages is None or translations is None or not release.exists():
        raise SystemExit(
            f"apt lists for {suite} main are missing in {LISTS}: run  apt-get update -o Acquire::Languages=en"
        )
    return packages, translations, release


def read_packages(suite: str = "bookworm") -> tuple[list[PackageText], dict]:
    packages_path, translations_path, release = lists(suite)
    descriptions = {
        f["Description-md5"]: _description(f["Description-en"])
        for f in _stanzas(_read_list(translations_path))
        if "Description-md5" in f and "Description-en" in f
    }
    out = []
    for f in _stanzas(_read_list(packages_path)):
        text = descriptions.get(f.get("Description-md5", ""))
        if not text or "Section" not in f:
            continue
        source = f.get("Source", f["Package"]).split(" ")[0]
        out.append(PackageText(f["Package"], source, f["Section"], text))
    date = next((line[6:] for line in release.read_text().splitlines() if line.startswith("Date: ")), "unknown")
    manifest = {
        "suite": suite,
        "release_date": date,
        "lists": {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (packages_path, translations_path, release)
        },
        "packages": len(out),
    }
    return out, manifest


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["sample"])
    parser.add_argument("out")
    parser.add_argument("--limit", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    packages, manifest = read_packages()
    random.Random(args.seed).shuffle(packages)
    sample = packages[: args.limit]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for p in sample:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
    manifest.update({"sample": len(sample), "seed": args.seed})
    Path(str(out) + ".manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{out}: {len(sample)} of {manifest['packages']} package descriptions ({manifest['release_date']})")


if __name__ == "__main__":
    main()
