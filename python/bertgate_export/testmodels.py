"""Small random-weight BertForSequenceClassification models with a locally trained WordPiece
tokenizer, saved as ordinary Hugging Face model directories. No hub access anywhere: the
vocabulary is trained on corpus.txt beside this file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
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
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator(corpus_lines() + (extra_lines or []), trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)],
    )
    tok.decoder = decoders.WordPiece()
    return tok


def wordpiece_tokenizer(vocab_size: int, lowercase: bool, max_length: int) -> PreTrainedTokenizerFast:
    """train_wordpiece, wrapped as a transformers tokenizer that save_pretrained can write."""
    return PreTrainedTokenizerFast(
        tokenizer_object=train_wordpiece(vocab_size, lowercase),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


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
