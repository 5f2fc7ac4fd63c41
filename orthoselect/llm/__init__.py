"""Reaching any LLM: the transports (`http`, the lean OpenAI-compatible client; `litellm_transport`, every
other provider) behind one `client` with classified retries, the structured-output dialects (`dialects`), the
request cache (`cache`, `object_cache`) and its background writer (`cache_writer`), rate limits for the whole
run (`limits`, `governor`), the circuit breaker (`breaker`), cost and token counts (`cost`, `tokens`) and the
usage of every request as it ends (`usage`).

May import: `orthoselect.config`, `orthoselect.data`, `orthoselect.types`, `orthoselect.hashing`."""
