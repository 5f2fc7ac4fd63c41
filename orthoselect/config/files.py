"""Config files: reading them from a path or any fsspec URL, dotted overrides, relative paths, and
writing a config back out; YAML 1.2 values for overrides given as text. The model itself is
`orthoselect.config`."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from orthoselect.hashing import stable_hash

PATH_KEYS = (("output", "path"), ("rules", "file"), ("cache", "path"))


def read_text(where: str) -> str:
    """A local file, or any fsspec URL (s3://bucket/config.yaml, with the standard AWS environment)."""
    if is_local(where):
        return Path(where.removeprefix("file://")).read_text()
    import fsspec

    with fsspec.open(where, "rt") as f:
        return f.read()


class Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the plain scalars of the YAML 1.2 core schema instead of YAML 1.1's:
    only true/false (any case as the spec lists: true, True, TRUE) are booleans, so `off`, `on`, `no`,
    `yes`, `y`, `n` stay strings; ints are decimal, 0o octal or 0x hex (`0755` is 755, `1_000` and
    `1:30` are strings); floats include `1e5`, `.inf`, `.nan`; null is null, Null, NULL, ~ or nothing;
    no timestamps (`2024-01-01` is a string), no `<<` merge keys."""


Yaml12Loader.yaml_implicit_resolvers = {}
_CORE_SCHEMA = (  # (tag, pattern, first characters), YAML 1.2 spec 10.3.2
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        list("-+.0123456789"),
    ),
)
for _tag, _pattern, _first in _CORE_SCHEMA:
    Yaml12Loader.add_implicit_resolver(f"tag:yaml.org,2002:{_tag}", re.compile(_pattern), _first)


def _yaml12_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    return int(text[2:], 8) if text.startswith("0o") else int(text[2:], 16) if text.startswith("0x") else int(text)


def _yaml12_float(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    if text.lstrip("+-") == ".inf":
        return -math.inf if text.startswith("-") else math.inf
    return math.nan if text == ".nan" else float(text)


Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _yaml12_int)
Yaml12Loader.add_constructor("tag:yaml.org,2002:float", _yaml12_float)


def load_yaml12(text: str) -> Any:
    """`text` read as YAML 1.2 (core schema, see Yaml12Loader). Raises yaml.YAMLError."""
    return yaml.load(text, Loader=Yaml12Loader)  # a SafeLoader subclass: no Python objects


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """`raw["a"]["b"] = value` for "a.b", creating sections as needed."""
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


def dotted_keys(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested Dask settings (YAML, --set overrides) as dotted keys."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        out.update(dotted_keys(value, name + ".") if isinstance(value, dict) else {name: value})
    return out


def run_name(run_dir: str) -> str:
    """A run's short name in the Prefect UI (flow-run names, artifact keys): the run directory's last part
    in lowercase letters, digits and dashes, and a hash of its whole URL (two `runs/demo` on different
    buckets differ; a local folder is named by its absolute path)."""
    if is_local(run_dir):
        run_dir = os.path.abspath(run_dir.removeprefix("file://"))
    last = run_dir.rstrip("/").rsplit("/", 1)[-1].lower()
    return f"{re.sub(r'[^a-z0-9]+', '-', last).strip('-')[:40] or 'run'}-{stable_hash(run_dir, 6)}"


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def resolve_paths(data: dict, base: Path) -> dict:
    """The config's local relative paths (dataset, run_dir, output, rules file, cache) made relative to
    `base`; URLs and absolute paths are kept."""

    def fix(p: str) -> str:
        if not is_local(p) or os.path.isabs(p.removeprefix("file://")):
            return p
        return str((base / p).resolve()) if not any(c in p for c in "*?[") else str(base / p)

    paths = data["dataset"]["path"]
    data["dataset"]["path"] = [fix(p) for p in paths] if isinstance(paths, list) else fix(paths)
    data["run_dir"] = fix(data["run_dir"])
    for section, key in PATH_KEYS:
        if data[section][key]:
            data[section][key] = fix(data[section][key])
    return data


def dump_config(cfg: Any) -> str:
    """A validated config (orthoselect.config.Config) as YAML, every option written out."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
