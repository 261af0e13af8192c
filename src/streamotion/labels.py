"""Emotion label sets: the 28 GoEmotions labels, Ekman's 7, and the mapping between them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

EKMAN = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

GOEMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity",
    "desire", "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear",
    "gratitude", "grief", "joy", "love", "nervousness", "optimism", "pride", "realization", "relief",
    "remorse", "sadness", "surprise", "neutral",
)  # fmt: skip

# The published GoEmotions Ekman mapping (Demszky et al., 2020).
GOEMOTIONS_TO_EKMAN: dict[str, str] = {
    **dict.fromkeys(("anger", "annoyance", "disapproval"), "anger"),
    "disgust": "disgust",
    **dict.fromkeys(("fear", "nervousness"), "fear"),
    **dict.fromkeys(
        (
            "joy",
            "amusement",
            "approval",
            "excitement",
            "gratitude",
            "love",
            "optimism",
            "relief",
            "pride",
            "admiration",
            "desire",
            "caring",
        ),
        "joy",
    ),
    **dict.fromkeys(("sadness", "disappointment", "embarrassment", "grief", "remorse"), "sadness"),
    **dict.fromkeys(("surprise", "realization", "confusion", "curiosity"), "surprise"),
    "neutral": "neutral",
}

TAXONOMIES: dict[str, tuple[str, ...]] = {"ekman": EKMAN, "original": GOEMOTIONS}

# Sentiment from Ekman emotions: joy is positive; these four are negative; the rest neutral.
POSITIVE = ("joy",)
NEGATIVE = ("anger", "disgust", "fear", "sadness")


def polarity(label: str) -> str:
    """positive / negative / neutral of one (Ekman or GoEmotions) label."""
    ekman = GOEMOTIONS_TO_EKMAN.get(label, label)
    return "positive" if ekman in POSITIVE else "negative" if ekman in NEGATIVE else "neutral"


def sentiment_index(scores: Mapping[str, float], multi_label: bool = False) -> float:
    """P(a positive emotion) - P(a negative emotion), in [-1, 1], over (Ekman or GoEmotions) scores.

    "Any of a group" is computed the way serving folds labels: the sum of a single-label (softmax)
    head's exclusive probabilities, the strongest of a multi-label (sigmoid) head's independent ones
    (summing four negative sigmoid scores against one positive would lean every text negative)."""
    pos = [float(v) for k, v in scores.items() if polarity(k) == "positive"]
    neg = [float(v) for k, v in scores.items() if polarity(k) == "negative"]
    if multi_label:
        return max(pos, default=0.0) - max(neg, default=0.0)
    return sum(pos) - sum(neg)


def sentiment(labels: Sequence[str], index: float = 0.0, threshold: float = 0.15) -> str:
    """positive / negative / neutral from the labels a result chose (the top label of a single-label
    head; every label over its threshold, else the top one, of a multi-label head): positive when
    they hold a positive emotion and no negative one, negative the other way round, neutral when they
    hold neither; a mixed set (both) follows ``index`` beyond ``threshold``."""
    kinds = {polarity(label) for label in labels}
    if "positive" in kinds and "negative" in kinds:
        return "positive" if index > threshold else "negative" if index < -threshold else "neutral"
    if "positive" in kinds:
        return "positive"
    if "negative" in kinds:
        return "negative"
    return "neutral"
