"""What the OFFLINE SIMULATOR reads off a document: text features (character mix, repeated lines,
boilerplate markers, ragged endings, ...), standardised with fixed constants so each document is scored
on its own, and the seven latent quality factors they make (`document_factors`). See scoring/simulated.py."""

from __future__ import annotations

import math
import re

import numpy as np

FEATURES = (
    "alpha",
    "odd_chars",
    "code_chars",
    "digits",
    "unique_lines",
    "word_length",
    "stopwords",
    "broken_words",
    "log_length",
    "boilerplate",
    "paragraph_ends",
    "ragged_end",
)
# Mean and spread of each feature over a mixed corpus (the stdlib demo corpus); fixed, not fitted per run.
FEATURE_MEAN = np.array([0.91, 0.013, 0.015, 0.011, 0.93, 5.4, 0.345, 0.024, 6.84, 0.22, 0.71, 0.38])
FEATURE_SD = np.array([0.068, 0.032, 0.026, 0.019, 0.156, 0.8, 0.074, 0.074, 0.61, 0.63, 0.276, 0.49])

FACTORS = ("clean_chars", "unique", "no_boilerplate", "complete", "length", "technical", "prose")
_FACTOR_RECIPES = {
    "clean_chars": {"alpha": 0.3, "odd_chars": -0.6, "broken_words": -0.6},
    "unique": {"unique_lines": 1.0},
    "no_boilerplate": {"boilerplate": -1.0},
    "complete": {"ragged_end": -1.0, "paragraph_ends": 0.4},
    "length": {"log_length": 1.0, "word_length": 0.2},
    "technical": {"code_chars": 0.8, "digits": 0.4},
    "prose": {"stopwords": 0.8, "paragraph_ends": 0.3, "code_chars": -0.3},
}
FACTOR_WEIGHTS = np.array([[recipe.get(f, 0.0) for f in FEATURES] for recipe in _FACTOR_RECIPES.values()])
# Divides each factor to about unit spread on the same reference corpus.
FACTOR_SCALE = np.array([1.35, 1.0, 1.0, 1.25, 1.0, 0.78, 1.0])


def _byte_classes() -> np.ndarray:
    """Class of each UTF-8 byte: 0 space, 1 letter, 2 digit, 3 prose punctuation, 4 code symbol, 5 odd
    (rare ASCII symbols, control characters and every byte of a non-ASCII character)."""
    classes = np.full(256, 5, dtype=np.intp)
    for chars, cls in (
        (" \t\n\r\x0b\x0c", 0),
        ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", 1),
        ("0123456789", 2),
        (".,;:!?'\"()-", 3),
        ("{}[]=<>_#*/+%&", 4),
    ):
        classes[[ord(c) for c in chars]] = cls
    return classes


_BYTE_CLASS = _byte_classes()

_STOPWORDS = frozenset(
    "the of and to a in is it that this for on with as be are by an or not if from at which when was "  # noqa: SIM905
    "can will its has have but all any one so than then there these they we you no may should must "
    "into only also each other such more".split()
)
_BOILERPLATE = (
    "copyright",
    "all rights reserved",
    "click here",
    "cookie",
    "privacy policy",
    "terms of service",
    "terms of use",
    "subscribe",
    "newsletter",
    "sign in",
    "log in",
    "skip to",
    "share this",
    "advertisement",
    "back to top",
    "home |",
)
_BROKEN_WORD = re.compile(r"[A-Za-z][^\sA-Za-z.,;:!?'\"()\[\]{}<>=_/\\*+#&%-][A-Za-z]")
_PARAGRAPHS = re.compile(r"\n\s*\n")


def document_features(text: str) -> np.ndarray:
    """The raw feature vector of one document, in FEATURES order."""
    data = np.frombuffer(text.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    counts = np.bincount(_BYTE_CLASS[data], minlength=6)
    visible = max(1, int(counts[1:].sum()))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lowered = text.lower()
    words = lowered.split()
    n_words = max(1, len(words))
    stripped = text.rstrip()
    paragraphs = [p for p in _PARAGRAPHS.split(stripped) if p.strip()]
    return np.array(
        [
            counts[1] / visible,
            counts[5] / visible,
            counts[4] / visible,
            counts[2] / visible,
            len(set(lines)) / len(lines) if lines else 0.0,
            sum(map(len, words)) / n_words,
            sum(map(_STOPWORDS.__contains__, words)) / n_words,
            len(_BROKEN_WORD.findall(text)) / n_words,
            math.log1p(len(text)),
            math.log1p(sum(lowered.count(marker) for marker in _BOILERPLATE)),
            sum(p.rstrip()[-1] in ".!?:)\"'" for p in paragraphs) / len(paragraphs) if paragraphs else 0.0,
            float(stripped[-1:].isalnum()) + 0.5 * (text.count("(") != text.count(")")),
        ]
    )


def document_factors(text: str) -> np.ndarray:
    """The document's latent quality factors, in FACTORS order; about zero mean and unit spread."""
    z = np.clip((document_features(text) - FEATURE_MEAN) / FEATURE_SD, -4.0, 4.0)
    return FACTOR_WEIGHTS @ z / FACTOR_SCALE
