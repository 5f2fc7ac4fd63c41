"""Degraded twins of a document for the canary check of the rater (`orthoselect.stages.canary`): copies a
rater that reads the document must score lower than the original, one per degradation family.

    shuffled     the words in a seeded random order (the vocabulary kept, the sense gone)
    truncated    the second half cut, mid-word where it can be (the demo corpus's `truncated`, at the half)
    repeated     lines repeated two to four times (the demo corpus's `repeated`)
    noisy        characters garbled (the demo corpus's `noisy`)
    boilerplate  navigation, cookie and copyright lines around the text (the demo corpus's `boilerplate`)

Each twin is a pure function of (seed, document id, family): the same run asks for the same twins, so their
ratings come from the request cache on a rerun."""

from __future__ import annotations

import random

from orthoselect.data.corpus import degrade
from orthoselect.hashing import uint64_key

FAMILIES = ("shuffled", "truncated", "repeated", "noisy", "boilerplate")
TWIN_SEP = "~"  # a twin's id: "<document id>~<family>"


def twin_id(doc_id: str, family: str) -> str:
    return f"{doc_id}{TWIN_SEP}{family}"


def _shuffled(text: str, rng: random.Random) -> str:
    words = text.split()
    if len(words) < 2:
        return text[::-1]
    order = words[:]
    for _ in range(3):  # a shuffle that leaves the order unchanged is drawn again
        rng.shuffle(order)
        if order != words:
            break
    return " ".join(order)


def _truncated(text: str) -> str:
    """The first half, cut inside a word when one spans the middle (a ragged end, as a cut-off page)."""
    half = len(text) // 2
    for i in range(half, min(len(text), half + 40)):
        if text[i - 1].isalpha() and text[i].isalpha():
            return text[:i]
    return text[:half].rstrip(" .!?\n")


def degraded_twin(text: str, family: str, seed: int, doc_id: str) -> str:
    """`text` degraded as `family` names; deterministic for (seed, doc_id, family). The result always differs
    from `text` (a twin equal to its original would be a tie, not a test)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown twin family {family!r}; expected one of {FAMILIES}")
    rng = random.Random(uint64_key("canary-twin", seed, doc_id, family))
    if family == "shuffled":
        out = _shuffled(text, rng)
    elif family == "truncated":
        out = _truncated(text)
    else:
        out = degrade(text, family, rng)
    return out if out != text else text + "\n" + text  # a text too short to degrade: repeated whole


def twins(doc_id: str, text: str, seed: int, families: tuple[str, ...] = FAMILIES) -> list[tuple[str, str, str]]:
    """(twin id, family, twin text) of one document, in `families` order."""
    return [(twin_id(doc_id, f), f, degraded_twin(text, f, seed, doc_id)) for f in families]
