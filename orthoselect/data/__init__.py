"""The data a run reads and writes: storage behind any fsspec URL with atomic writes (`storage`), the input
shards (`shards`: listing, fingerprints, validated batches of documents), the pool's size (`pool_size`), and
the demo corpus with known labels (`corpus`).

May import: `orthoselect.config`, `orthoselect.types`, `orthoselect.hashing`."""
