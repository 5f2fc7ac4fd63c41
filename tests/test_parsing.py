"""The strict score parser: every accepted shape gives the exact score, every rejected one a reason."""

import pytest

from orthoselect.scoring.parsing import ScoreParseError, parse_score

ACCEPTED = [
    ("0.7", 0.7),
    (" .7 ", 0.7),
    ("1", 1.0),
    ("0", 0.0),
    ("0.70.", 0.7),
    ("0.85\n", 0.85),
    ('"0.8"', 0.8),
    ("'0.8'", 0.8),
    ("`0.8`", 0.8),
    ("**0.8**", 0.8),
    ("```\n0.8\n```", 0.8),
    ('```json\n{"score": 0.8}\n```', 0.8),
    ("Score: 0.8", 0.8),
    ("**Score:** 0.8", 0.8),
    ("score:0.8", 0.8),
    ("Rating = 7/10", 0.7),
    ("Final score is 0.6", 0.6),
    ("The final score is: 0.6.", 0.6),
    ("Answer: 0.9", 0.9),
    ("Overall rating of 8 out of 10", 0.8),
    ("The document scores 0.8.", 0.8),
    ("This text receives a score of 85%", 0.85),
    ("7/10", 0.7),
    ("3 / 5", 0.6),
    ("7 out of 10", 0.7),
    ("11/10", 1.0),
    ("85%", 0.85),
    ("100 %", 1.0),
    ("7", 0.7),
    ("8.5", 0.85),
    ("10", 1.0),
    ("85", 0.85),
    ("100", 1.0),
    ('{"score": 0.8}', 0.8),
    ('{"Rating": 7}', 0.7),
    ('{"score": "0.8"}', 0.8),
    ('{"score": "7/10", "reason": "clear but short"}', 0.7),
    ('{"score": 7, "max": 10}', 0.7),
    ('{"coherence": 0.4}', 0.4),
    ("[0.8]", 0.8),
    ('{"score": 0.8}.', 0.8),
    ("**Rating:** 8/10", 0.8),
    ("Score: 0.8/1.0", 0.8),
    ("[85]", 0.85),
]

REJECTED = [
    ("", "empty"),
    ("   \n ", "empty"),
    ("``````", "empty"),
    ("N/A", "no number"),
    ("I cannot rate this document.", "no number"),
    ("Score: N/A", "no number"),
    ("between 0.3 and 0.8", "several numbers"),
    ("0.3 or 0.8", "several numbers"),
    ("I'd give it 7/10 overall", "several numbers"),
    ("I think it is about 0.8, roughly", "unrecognised"),
    ("0.8\nThe document is clear.", "unrecognised"),
    ("0,8", "several numbers"),
    ('{"score": 0.', "bad json"),
    ('{"score": 0.8', "bad json"),
    ("[0.8, 0.3]", "several numbers"),
    ("[]", "no number"),
    ('{"reason": "fine"}', "no number"),
    ('{"a": 0.2, "b": 0.9}', "several numbers"),
    ('{"score": null}', "no number"),
    ('{"score": true}', "no number"),
    ('{"score": "high"}', "no number"),
    ('{"score": 250}', "out of range"),
    ('{"score": NaN}', "not finite"),
    ("101", "out of range"),
    ("250%", "out of range"),
    ("-0.5", "out of range"),
    ("-0", "out of range"),
    ("-3/10", "out of range"),
    ("3/0", "out of range"),
    ("15/10", "out of range"),
    ("nan", "not finite"),
    ("inf", "not finite"),
    ("Score: infinity", "not finite"),
    ("1e999", "not finite"),
]


@pytest.mark.parametrize("answer, expected", ACCEPTED)
def test_accepted(answer, expected):
    assert parse_score(answer) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("answer, reason", REJECTED)
def test_rejected(answer, reason):
    with pytest.raises(ScoreParseError) as info:
        parse_score(answer)
    assert info.value.reason == reason
    assert isinstance(info.value, ValueError)


def test_scores_always_in_unit_interval():
    for answer, _ in ACCEPTED:
        assert 0.0 <= parse_score(answer) <= 1.0


def test_error_message_quotes_truncated_answer():
    long = "no score here " * 20
    with pytest.raises(ScoreParseError) as info:
        parse_score(long)
    message = str(info.value)
    assert message.startswith("no number: cannot read a score from 'no score here")
    assert "..." in message and len(message) < 160


def test_none_is_empty_and_other_types_are_type_errors():
    with pytest.raises(ScoreParseError) as info:
        parse_score(None)  # type: ignore[arg-type]  # the wrong type on purpose: what a caller outside the types may pass
    assert info.value.reason == "empty"
    with pytest.raises(TypeError):
        parse_score(0.5)  # type: ignore[arg-type]  # the wrong type on purpose: the TypeError under test
