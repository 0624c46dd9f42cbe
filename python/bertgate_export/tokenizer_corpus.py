"""The golden corpus for tokenizer parity: texts generated from a fixed seed, three BERT
WordPiece tokenizers, and what the pinned Python `tokenizers` makes of each text under each
truncation setting. The Node tests must reproduce every id, type id and mask.

    python -m bertgate_export.tokenizer_corpus OUT_DIR
writes OUT_DIR/<tokenizer>/tokenizer.json and OUT_DIR/tokenizer-parity.json.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

from tokenizers import Tokenizer

from .testmodels import corpus_lines, train_wordpiece

MAX_LENGTH = 48
SEED = 20261126

ENGLISH = [
    "The package provides a command-line tool",
    "Install the library and its development headers",
    "A fast web server with TLS support",
    "Error: cannot open shared object file",
    "THE QUICK BROWN FOX jumps over the lazy dog",
    "don't, won't, isn't: contractions and punctuation!?",
    "version 2.11.0 released on 2026-11-26 (build #4512)",
]
GERMAN = [
    "Größere Dateien werden über das Netzwerk übertragen",
    "Die Straße führt über die Brücke",
    "ÄRGER mit der ÖFFENTLICHEN Übersetzung",
    "Fußgängerübergänge und Maßstäbe",
]
TURKISH = [
    "İstanbul'da ılık bir akşam",
    "ISPARTA IĞDIR İZMİR DİYARBAKIR",
    "ışık Işık IŞIK isim İsim",
    "kırmızı çiçekler ve güzel günler",
    "Iğdır ile İğne arasında bir i ve bir ı",
]
CJK = [
    "用于管理软件包的命令行工具",
    "パッケージ管理ツールです",
    "カタカナとひらがなと漢字",
    "패키지와 그 의존성을 관리하는 도구",
    "中文，日本語。한국어！",
]
EMOJI = ["😀", "👍🏽", "👩‍👩‍👧‍👦", "🇹🇷🇩🇪", "🏳️‍🌈", "1️⃣", "🚀🎉", "❤️‍🔥"]
# Precomposed and decomposed (combining marks) spellings side by side.
ACCENTS = ["Café", "cafe\u0301", "naïve", "nai\u0308ve", "Ångström", "A\u030angstro\u0308m", "jalapeño", "Łódź"]
CONTROL = ["\x00", "\x07", "\x1b[31mred\x1b[0m", "\x7f", "\u0085", "\u2028", "\x0b", "\x0c"]
ZERO_WIDTH = ["\u200b", "\u200c", "\u200d", "\ufeff", "\u2060", "\u00ad", "zero\u200bwidth", "soft\u00adhyphen"]
WHITESPACE = ["", " ", "   ", "\t", "\n", "\r\n", "\t\n \r", "\u00a0", "\u3000", "\u2003\u2003"]
POOLS = [ENGLISH, GERMAN, TURKISH, CJK, EMOJI, ACCENTS, CONTROL, ZERO_WIDTH]
SEPARATORS = [" ", " ", " ", "", "\n", "\t", ", "]


def generate_texts(rng: random.Random) -> list[str]:
    texts = list(WHITESPACE)
    for pool in POOLS:
        texts.extend(pool)
    words = " ".join(corpus_lines()).split()
    while len(texts) < 1990:
        parts = [rng.choice(rng.choice(POOLS)) for _ in range(rng.randint(1, 6))]
        if rng.random() < 0.3:
            parts.append(" ".join(rng.choices(words, k=rng.randint(1, 60))))
        text = rng.choice(SEPARATORS).join(parts)
        texts.append(text.upper() if rng.random() < 0.1 else text)
    # 10,000-character texts: truncation from far beyond the limit.
    for i in range(10):
        long = ""
        while len(long) < 10_000:
            long += rng.choice(rng.choice(POOLS)) + rng.choice(SEPARATORS)
        texts.append(long[:10_000] if i % 2 else (rng.choice(words) + " ") * 2000)
    return [t[:10_000] for t in texts]


def generate_pairs(rng: random.Random, texts: list[str]) -> list[list[str]]:
    def cut() -> str:
        return rng.choice(texts)[: rng.choice([20, 200, 10_000])]

    return [[cut(), cut()] for _ in range(600)]


TOKENIZERS = {
    "uncased": {"lowercase": True, "strip_accents": None},
    "cased": {"lowercase": False, "strip_accents": None},
    # As the dbmdz Turkish uncased models: lowercased, accents (ç ğ ı ö ş ü) kept.
    "turkish-uncased": {"lowercase": True, "strip_accents": False},
}
SINGLE_SETTINGS = [("longest_first", "right"), ("longest_first", "left"), ("only_first", "right")]
PAIR_SETTINGS = [(s, d) for s in ("longest_first", "only_first", "only_second") for d in ("right", "left")]


def encode(tok: Tokenizer, inputs: list, strategy: str, side: str) -> list[dict]:
    tok.enable_truncation(MAX_LENGTH, strategy=strategy, direction=side)
    out = []
    for item in inputs:
        try:
            e = tok.encode(*item) if isinstance(item, list) else tok.encode(item)
        except Exception as error:  # noqa: BLE001 - the error itself is the expected result
            out.append({"error": str(error)})
            continue
        out.append({"ids": e.ids, "type_ids": e.type_ids, "truncated": len(e.overflowing) > 0})
    return out


def padded_batches(tok: Tokenizer, texts: list[str], size: int = 16) -> list[dict]:
    """Batches padded to their longest row, as HF pads them: ids and attention mask."""
    tok.enable_truncation(MAX_LENGTH)
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    batches = []
    for start in range(0, 320, size):
        encodings = tok.encode_batch(texts[start : start + size])
        batches.append(
            {"start": start, "ids": [e.ids for e in encodings], "attention_mask": [e.attention_mask for e in encodings]}
        )
    tok.no_padding()
    return batches


def build(out: Path) -> None:
    rng = random.Random(SEED)
    texts = generate_texts(rng)
    pairs = generate_pairs(rng, texts)
    extra = [t for t in texts if len(t) < 300]
    result = {"max_length": MAX_LENGTH, "texts": texts, "pairs": pairs, "tokenizers": {}}
    for name, normalizer in TOKENIZERS.items():
        tok = train_wordpiece(3000, normalizer["lowercase"], normalizer["strip_accents"], extra)
        (out / name).mkdir(parents=True, exist_ok=True)
        tok.save(str(out / name / "tokenizer.json"))
        result["tokenizers"][name] = {
            "singles": {f"{s}/{d}": encode(tok, texts, s, d) for s, d in SINGLE_SETTINGS},
            "pairs": {f"{s}/{d}": encode(tok, pairs, s, d) for s, d in PAIR_SETTINGS},
            "padded": padded_batches(tok, texts),
        }
    (out / "tokenizer-parity.json").write_text(json.dumps(result, ensure_ascii=False))
    print(f"tokenizer corpus: {len(texts)} texts, {len(pairs)} pairs, {len(TOKENIZERS)} tokenizers")


if __name__ == "__main__":
    build(Path(sys.argv[1]))
