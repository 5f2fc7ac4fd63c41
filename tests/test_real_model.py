"""A real model end to end: SmolLM2-135M-Instruct served by llama-cpp-python on loopback
(tests/support/llama_server.py). The first run on a machine builds llama-cpp-python into a venv under
$ORTHOSELECT_CACHE (~/.cache/orthoselect) and downloads the model; later runs reuse both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orthoselect.llm.client import LLMClient
from orthoselect.llm.transport import Completion
from orthoselect.prompts import rating_messages
from support.llama_server import LlamaServer, ensure_llama_python, ensure_smollm2

pytestmark = [pytest.mark.integration, pytest.mark.real_model]

DOC = (
    "def median(values):\n"
    '    """The middle value of a non-empty list of numbers; the mean of the two middle ones when the\n'
    '    list has an even length."""\n'
    "    ordered = sorted(values)\n"
    "    mid = len(ordered) // 2\n"
    "    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2\n"
)


@pytest.fixture(scope="module")
def llama() -> Iterator[LlamaServer]:
    with LlamaServer(ensure_smollm2(), ensure_llama_python()) as server:
        yield server


def test_the_server_answers_a_rating_prompt(llama: LlamaServer) -> None:
    before = llama.chat_requests()
    # complete_sync sends no response_format: a plain-text answer, as structured_output "off" asks
    with LLMClient(model=f"openai/{llama.served_model}", api_base=llama.api_base, timeout_s=120) as client:
        answer = client.complete_sync(
            rating_messages("The document is correct, documented Python code.", DOC), max_tokens=16
        )
        assert isinstance(answer, Completion)
        assert answer.tokens_in > 0 and answer.finish_reason in ("stop", "length")
        assert client.requests >= 1
        assert llama.chat_requests() - before == client.requests
