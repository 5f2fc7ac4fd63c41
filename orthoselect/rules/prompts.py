"""The prompt that asks an LLM for candidate rules. Its text is part of every request-cache key, so editing
it asks again."""

from __future__ import annotations

RULES_SYSTEM = "You write data-quality rules used to select fine-tuning data for a language model."

RULES_USER = """Target task: {task}

Data pool: {data}

Example documents from the pool:
{examples}

Write {count} distinct data-quality rules that a document should satisfy to be good fine-tuning data for
the target task. Mix general text-quality rules with rules specific to the task. Each rule is one sentence
of the form "Name: description". Make the rules as different from each other as you can.

Answer with JSON of the form {{"rules": [...]}} holding a JSON list of {count} strings, and nothing else."""

# Structured output of rule generation (a JSON object: OpenAI's strict schemas need one at the top).
RULES_RESPONSE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "rules",
        "schema": {
            "type": "object",
            "properties": {"rules": {"type": "array", "items": {"type": "string"}}},
            "required": ["rules"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def rules_messages(task: str, data: str, examples: list[str], count: int) -> list[dict]:
    shown = "\n".join(f"--- example {i + 1} ---\n{text}" for i, text in enumerate(examples)) or "(none)"
    user = RULES_USER.format(task=task, data=data, examples=shown, count=count)
    return [{"role": "system", "content": RULES_SYSTEM}, {"role": "user", "content": user}]


RULES_RETRY = """Attempt {attempt}. {problem}Write new rules, different from {kept}. Each rule names one property
of a good document and describes it in its own words (never the placeholder "Name: description"). Answer only
with JSON of the form {{"rules": ["<name>: <what a good document does>", ...]}}."""


def retry_note(attempt: int, problem: str, kept: list[str]) -> str:
    """The message added to a repeated request: its attempt number (so it is a new request and a new draw,
    not the cached answer of the last one), what was wrong with the last answer, and the rules kept so far."""
    problem = f"Your previous answer could not be used fully: {problem}. " if problem else ""
    names = [k.split(":", 1)[0].strip() for k in kept]
    shown = "each other and from these rules you already wrote: " + "; ".join(names) if names else "each other"
    return RULES_RETRY.format(attempt=attempt, problem=problem, kept=shown)
