"""Before a run does anything: the checks of a config against what it points at, the dataset, the rules file,
the models' providers and the S3 locations (`checks`), and what the run will cost, projected from the config
and a token count of sampled documents (`estimate`).

May import: `orthoselect.config`, `orthoselect.data`, `orthoselect.llm`, `orthoselect.rules`,
`orthoselect.scoring`, `orthoselect.types`, `orthoselect.hashing`."""
