"""What a person reads about a run: report.md (`markdown`, `text`) and report.html (`html`, `html_sections`)
from the manifest, their plots (`plots`, kept in the run directory by `data`), the report files as the
`report` command finds them (`files`), rule tables (`rules`), and `Artifact`, what the library declares a
person watching a run should see (`artifacts`; the orchestration publishes it).

May import: `orthoselect.config`, `orthoselect.data`, `orthoselect.choice` (a rule's quality threshold),
`orthoselect.types`, `orthoselect.hashing`."""
