"""Token counts and truncation with tiktoken's cl100k_base, read offline from litellm's bundled copy."""

from __future__ import annotations

import functools
import importlib.util
import os


@functools.lru_cache(maxsize=1)
def _encoding():
    spec = importlib.util.find_spec("litellm")
    if spec and spec.origin and "TIKTOKEN_CACHE_DIR" not in os.environ:
        bundled = os.path.join(os.path.dirname(spec.origin), "litellm_core_utils", "tokenizers")
        if os.path.isdir(bundled):
            os.environ["TIKTOKEN_CACHE_DIR"] = bundled
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def count_tokens(text: str) -> int:
    return len(_encoding().encode(text, disallowed_special=()))


def truncate_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """The first `max_tokens` tokens of `text`, and whether anything was cut. Very long texts are cut
    to 8 characters a token before encoding, so a 10 MB document costs no more than a short one."""
    head = text[: max_tokens * 8]
    ids = _encoding().encode(head, disallowed_special=())
    if len(ids) <= max_tokens and len(head) == len(text):
        return text, False
    if len(ids) <= max_tokens:
        return head, True
    return _encoding().decode(ids[:max_tokens]), True


def estimate_tokens(n_chars: int) -> int:
    """Cheap estimate for sizing and budgets when the text is not at hand: ~4 characters a token."""
    return max(1, (n_chars + 3) // 4)
