"""Emotion label sets: the 28 GoEmotions labels, Ekman's 7, and the mapping between them."""

from __future__ import annotations

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


def sentiment(scores: dict[str, float], threshold: float = 0.15) -> str:
    """positive / negative / neutral from (Ekman or GoEmotions) scores."""
    ekman: dict[str, float] = {}
    for label, score in scores.items():
        target = GOEMOTIONS_TO_EKMAN.get(label, label)
        ekman[target] = ekman.get(target, 0.0) + score
    index = sum(ekman.get(x, 0.0) for x in POSITIVE) - sum(ekman.get(x, 0.0) for x in NEGATIVE)
    if index > threshold:
        return "positive"
    if index < -threshold:
        return "negative"
    return "neutral"
