"""`--set key=text` values: read against the config option's type, so a text option keeps `off`, `no` or
`123` as typed, and everything else is YAML 1.2 (orthoselect/config/files.py)."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from orthoselect.config import Config, ConfigError
from orthoselect.config.files import load_yaml12

YAML11_BOOLEANS = {"yes": True, "y": True, "on": True, "no": False, "n": False, "off": False}
"""What YAML 1.1 (and so a config file) reads as a boolean beyond true/false; a bool option given one on
the command line takes it as that boolean, as the same word in the config file would be."""


def option_type(dotted: str) -> Any:
    """The type of a dotted config key (`rating.sample_size` -> int, `output.path` -> str | None); Any
    inside a free-form mapping (`cluster.dask_config.distributed.admin.tick.interval`); None when there is
    no such option (the config's validation then names the key)."""
    annotation: Any = Config
    for part in dotted.split("."):
        models = [m for m in _members(annotation) if isinstance(m, type) and issubclass(m, BaseModel)]
        if models:
            field = models[0].model_fields.get(part)
            if field is None:
                return None
            annotation = field.annotation
        elif any(m is Any or typing.get_origin(m) is dict for m in _members(annotation)):
            return Any
        else:
            return None
    return annotation


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a union (`str | None` -> [str, NoneType]); [annotation] otherwise."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _is_text(member: Any) -> bool:
    """str, or a Literal of strings only."""
    if member is str:
        return True
    return typing.get_origin(member) is Literal and all(isinstance(a, str) for a in typing.get_args(member))


def parse_override(key: str, text: str) -> Any:
    """The value of a dotted config key given as text (`--set key=text`), read against the option's type:

    - an option that takes a string (str, or a Literal of strings such as rating.structured_output) keeps
      the text as it is (stripped; quotes removed when the whole text is quoted), so `off`, `on`, `no`,
      `yes`, `y`, `n` and `123` stay strings; where the option also takes other values (`str | None`,
      `str | list[str]`), text that reads as one of them in YAML 1.2 becomes it (`null`, `[a, b]`);
    - a bool option takes true/false, and the YAML 1.1 words for booleans (YAML11_BOOLEANS), as a
      config file would;
    - anything else (numbers, lists, mappings, sections, free-form settings, unknown keys) is read as
      YAML 1.2 (`load_yaml12`): only true/false are booleans, `off` is a string.

    Whether the value is valid is the config's validation's to say (naming the key). Raises ConfigError
    naming the key when text for a non-string option is not valid YAML."""
    annotation = option_type(key)
    members = _members(annotation) if annotation is not None else [Any]
    raw = text.strip()
    try:
        value = load_yaml12(text)
    except yaml.YAMLError as e:
        if any(_is_text(m) for m in members):
            return raw
        problem = str(getattr(e, "problem", None) or e).splitlines()[0]
        raise ConfigError(f"{key}={text!r}: not valid YAML ({problem})") from None
    if bool in members and raw.lower() in YAML11_BOOLEANS and not any(_is_text(m) for m in members):
        return YAML11_BOOLEANS[raw.lower()]
    if not any(_is_text(m) for m in members):
        return value
    if isinstance(value, str):
        quoted = len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\""
        return value if quoted else raw
    for other in (m for m in members if not _is_text(m)):
        try:
            TypeAdapter(other).validate_python(value, strict=True)
            return value
        except ValidationError:
            continue
    return raw
