"""Small random-weight BertForSequenceClassification models with a locally trained WordPiece
tokenizer, saved as ordinary Hugging Face model directories. No hub access anywhere: the
vocabulary is trained on corpus.txt beside this file. Everything here is deterministic, so the
test fixtures built from it are byte-identical between clones and runs."""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

CORPUS = Path(__file__).with_name("corpus.txt")
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def corpus_lines() -> list[str]:
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def train_wordpiece(
    vocab_size: int, lowercase: bool, strip_accents: bool | None = None, extra_lines: list[str] | None = None
) -> Tokenizer:
    """A BERT-style WordPiece tokenizer (BertNormalizer, BertPreTokenizer, [CLS] A [SEP] B [SEP])
    trained on corpus.txt plus `extra_lines`. strip_accents None follows lowercase, as in BERT."""
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = Counter(
        word
        for line in corpus_lines() + (extra_lines or [])
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line))
    )
    vocab = wordpiece_vocab(words, vocab_size)
    tok = Tokenizer(models.WordPiece({token: i for i, token in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def wordpiece_vocab(words: Counter[str], vocab_size: int) -> list[str]:
    """What the `tokenizers` WordPiece trainer learns (BPE merges over the words, "##" marking a
    continuation), with ties broken by the pair's text: the trainer breaks them by ids it
    assigns in hash-map order, so two runs on the same corpus learn different vocabularies."""
    alphabet = sorted({c for word in words for c in word}) + sorted({"##" + c for word in words for c in word[1:]})
    vocab = list(dict.fromkeys(SPECIAL_TOKENS + alphabet))
    known = set(vocab)
    splits = {word: [word[0]] + ["##" + c for c in word[1:]] for word in words}
    counts: Counter[tuple[str, str]] = Counter()
    holders: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for word, parts in splits.items():
        for pair in pairwise(parts):
            counts[pair] += words[word]
            holders[pair].add(word)
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if counts[pair] != -negative:
            continue  # a stale entry: the pair's count changed since it was pushed
        merged = pair[0] + pair[1][2:]
        if merged not in known:
            vocab.append(merged)
            known.add(merged)
        touched = set()
        for word in holders.pop(pair):
            parts, count = splits[word], words[word]
            for old in pairwise(parts):
                counts[old] -= count
                touched.add(old)
            joined, i = [], 0
            while i < len(parts):
                if i + 1 < len(parts) and (parts[i], parts[i + 1]) == pair:
                    joined.append(merged)
                    i += 2
                else:
                    joined.append(parts[i])
                    i += 1
            splits[word] = joined
            for new in pairwise(joined):
                counts[new] += count
                holders[new].add(word)
                touched.add(new)
        for other in touched:
            if counts[other] > 0:
                heapq.heappush(heap, (-counts[other], other))
    return vocab


def bert_tokenizer(tokenizer: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """A tokenizers WordPiece, wrapped with BERT's special tokens as a transformers tokenizer that
    save_pretrained can write."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def wordpiece_tokenizer(vocab_size: int, lowercase: bool, max_length: int) -> PreTrainedTokenizerFast:
    """train_wordpiece, wrapped as a transformers tokenizer that save_pretrained can write."""
    return bert_tokenizer(train_wordpiece(vocab_size, lowercase), max_length)


@dataclass
class ModelSpec:
    labels: list[str]
    hidden: int = 32
    layers: int = 2
    heads: int = 2
    max_positions: int = 64
    vocab_size: int = 1200
    lowercase: bool = True
    seed: int = 0
    # Embedding rows; by default the tokenizer's size. Larger reproduces a real model's
    # geometry (BERT-base: 30522) with the small local vocabulary.
    model_vocab_size: int | None = None
    # Further BertConfig fields.
    extra: dict = field(default_factory=dict)


def build_model_dir(spec: ModelSpec, out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    tokenizer = wordpiece_tokenizer(spec.vocab_size, spec.lowercase, spec.max_positions)
    config = BertConfig(
        vocab_size=spec.model_vocab_size or len(tokenizer),
        hidden_size=spec.hidden,
        num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads,
        intermediate_size=spec.hidden * 4,
        max_position_embeddings=spec.max_positions,
        num_labels=len(spec.labels),
        id2label=dict(enumerate(spec.labels)),
        label2id={label: i for i, label in enumerate(spec.labels)},
        pad_token_id=tokenizer.pad_token_id,
        **spec.extra,
    )
    torch.manual_seed(spec.seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
