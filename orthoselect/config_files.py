"""Config files: reading them from a path or any fsspec URL, dotted overrides, relative paths, and
writing a config back out. The model itself is `orthoselect.config`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

PATH_KEYS = (("output", "path"), ("rules", "file"), ("cache", "path"))


def read_text(where: str) -> str:
    """A local file, or any fsspec URL (s3://bucket/config.yaml, with the standard AWS environment)."""
    if is_local(where):
        return Path(where.removeprefix("file://")).read_text()
    import fsspec

    with fsspec.open(where, "rt") as f:
        return f.read()


def set_dotted(raw: dict, dotted: str, value: Any) -> None:
    """`raw["a"]["b"] = value` for "a.b", creating sections as needed."""
    node = raw
    *parents, leaf = dotted.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value


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
