"""Judging the rule choice where the truth is known: `orthoselect eval` against labels on a run's sample
(`evaluate`, its tables and plots in `report`), and the synthetic worlds of the chooser benchmark
(`synthetic`).

May import: `orthoselect.config`, `orthoselect.data`, `orthoselect.rules`, `orthoselect.choice`,
`orthoselect.report`, `orthoselect.types`, `orthoselect.hashing`."""
