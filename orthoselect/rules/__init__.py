"""Candidate rules: a rule set read, normalised, de-duplicated and hashed (`sets`), the prompts that ask an
LLM for rules (`prompts`), and rule generation through the LLM layer (`generation`).

May import: `orthoselect.config`, `orthoselect.data`, `orthoselect.llm`, `orthoselect.types`,
`orthoselect.hashing`."""
