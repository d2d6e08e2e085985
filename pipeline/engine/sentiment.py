"""Customer sentiment of one message: the source's score, else VADER's compound score of the text."""

from __future__ import annotations

from functools import lru_cache

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

# A score at or below this is negative (VADER's own convention).
NEGATIVE_THRESHOLD = -0.05

_analyzer: SentimentIntensityAnalyzer | None = None


@lru_cache(maxsize=65536)
def vader_compound(text: str) -> float:
    """VADER compound score in [-1, 1]; cached because contact-center texts repeat a lot."""
    global _analyzer  # noqa: PLW0603 - one lexicon per process, loaded on first use
    if _analyzer is None:
        _analyzer = SentimentIntensityAnalyzer()
    return float(_analyzer.polarity_scores(text)["compound"])


def message_score(sentiment: float | None, text: str | None) -> float | None:
    """The score a customer message contributes, or None when it has neither score nor text."""
    if sentiment is not None:
        return sentiment
    if text:
        return vader_compound(text)
    return None
