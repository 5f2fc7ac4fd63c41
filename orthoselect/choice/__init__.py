"""Choosing the r rules: per-rule quality and redundancy clusters (`quality`), the kernels and the chooser
`select_rules` (`dpp`), exact k-DPP sampling and greedy MAP (`inference`), and the label-free diagnostics of a
chosen set: fidelity, rho, random subsets, whether the rater discriminates (`diagnostics`). Pure numerics on
a score matrix: nothing here reads files or calls an LLM.

May import: `orthoselect.config` (the DPP section), `orthoselect.types`, `orthoselect.hashing`."""
