"""Tiny, randomly initialised sequence-classification models built locally (no hub), for tests.

``build_tiny_model(dir)`` writes a standard Hugging Face model directory (config, weights,
WordPiece tokenizer) that everything in serving loads exactly like a real checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from streamotion.labels import EKMAN, GOEMOTIONS

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Enough everyday and emotional words that test texts tokenize to words, not [UNK].
WORDS = [
    "a",
    "about",
    "after",
    "again",
    "all",
    "am",
    "an",
    "and",
    "angry",
    "annoyed",
    "any",
    "are",
    "as",
    "at",
    "awful",
    "bad",
    "be",
    "beautiful",
    "because",
    "been",
    "before",
    "best",
    "better",
    "big",
    "bored",
    "but",
    "by",
    "can",
    "cannot",
    "love",
    "loved",
    "loves",
    "lovely",
    "day",
    "did",
    "do",
    "does",
    "dog",
    "don",
    "done",
    "down",
    "excited",
    "fear",
    "feel",
    "feeling",
    "fine",
    "for",
    "from",
    "fun",
    "furious",
    "glad",
    "good",
    "great",
    "had",
    "happy",
    "has",
    "hate",
    "hated",
    "have",
    "he",
    "her",
    "here",
    "him",
    "his",
    "how",
    "i",
    "if",
    "in",
    "is",
    "it",
    "its",
    "just",
    "know",
    "like",
    "little",
    "lol",
    "made",
    "make",
    "man",
    "me",
    "more",
    "most",
    "my",
    "never",
    "new",
    "nice",
    "no",
    "not",
    "nothing",
    "now",
    "of",
    "oh",
    "ok",
    "okay",
    "on",
    "one",
    "only",
    "or",
    "our",
    "out",
    "people",
    "really",
    "right",
    "sad",
    "said",
    "same",
    "saw",
    "scared",
    "see",
    "she",
    "shocked",
    "sick",
    "so",
    "some",
    "sorry",
    "still",
    "surprised",
    "terrible",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "think",
    "this",
    "time",
    "to",
    "today",
    "too",
    "tv",
    "up",
    "us",
    "very",
    "was",
    "way",
    "we",
    "well",
    "went",
    "were",
    "what",
    "when",
    "which",
    "who",
    "why",
    "will",
    "with",
    "wonderful",
    "work",
    "worried",
    "would",
    "wow",
    "yes",
    "yet",
    "you",
    "your",
    "name",
    "religion",
    "disgusting",
    "gross",
    "afraid",
    "nervous",
    "proud",
    "grateful",
    "amazing",
    "lonely",
    "cry",
    "crying",
    "upset",
    "wrong",
]


def build_vocab(extra: Sequence[str] = ()) -> list[str]:
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,!?'\"-:;()[]")
    words = sorted(set(WORDS) | set(extra))
    vocab = SPECIAL + letters + ["##" + c for c in letters] + words
    seen: set[str] = set()
    return [t for t in vocab if not (t in seen or seen.add(t))]


def build_tiny_model(
    out_dir: str | Path,
    labels: Sequence[str] = EKMAN,
    multi_label: bool = False,
    hidden_size: int = 32,
    layers: int = 2,
    seed: int = 0,
    name: str | None = None,
) -> Path:
    """Write a tiny BERT sequence classifier with ``labels`` as id2label; returns ``out_dir``."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = build_vocab()
    vocab_file = out / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(
        vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=True, model_max_length=512
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=512,
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
    )
    config.name_or_path = name or f"tiny-bert-{len(labels)}{'-multi' if multi_label else ''}"
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def tiny_models(root: str | Path) -> dict[str, Path]:
    """The three tiny variants the tests use: Ekman 7, GoEmotions 28, GoEmotions 28 multi-label."""
    root = Path(root)
    return {
        "ekman": build_tiny_model(root / "tiny-ekman", EKMAN),
        "original": build_tiny_model(root / "tiny-original", GOEMOTIONS),
        "original-multi": build_tiny_model(root / "tiny-original-multi", GOEMOTIONS, multi_label=True),
    }
