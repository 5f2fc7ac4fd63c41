"""Keeping documents: the final selection by `top_k`, `threshold`, `fraction`, `token_budget` or `gumbel`
over the pool's scores, streamed shard by shard (`modes`).

May import: `orthoselect.config`, `orthoselect.hashing`."""
