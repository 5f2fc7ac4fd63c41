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
