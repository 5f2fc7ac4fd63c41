"""The config model: every option documented, bad configs fail before any work, naming the key."""

from pathlib import Path

import pytest
import yaml

from orthoselect.config import Config, ConfigError, load_config
from orthoselect.config.doc import documented_yaml
from orthoselect.config.files import load_yaml12
from orthoselect.config.overrides import option_type, parse_override

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, data) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_full_example_is_generated_from_the_model_and_valid():
    text = (ROOT / "examples" / "config.full.yaml").read_text()
    assert text == documented_yaml(), "regenerate: orthoselect config-template > examples/config.full.yaml"
    Config.model_validate(yaml.safe_load(text))


def _all_fields(model, prefix=""):
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            yield from _all_fields(ann, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def test_every_option_has_a_description():
    undocumented = [name for name, field in _all_fields(Config) if not field.description]
    assert not undocumented


def test_minimal_config_gets_documented_defaults(tmp_path):
    cfg = load_config(write(tmp_path, {"dataset": {"path": "data"}}))
    assert cfg.rules.count == 50 and cfg.dpp.k == 10 and cfg.dpp.kernel == "quality"
    assert cfg.dpp.method == "greedy" and cfg.selection.mode == "top_k" and cfg.rating.model == "simulated"
    assert cfg.dataset.path == str(tmp_path / "data")  # relative paths resolve against the config's folder
    assert cfg.output_path == str(tmp_path / "runs" / "default") + "/selected"


@pytest.mark.parametrize(
    "data, key",
    [
        ({"dataset": {"path": "d"}, "rating": {"sample_sise": 10}}, "rating.sample_sise"),
        ({"dataset": {"path": "d"}, "dpp": {"k": 0}}, "dpp.k"),
        ({"dataset": {"path": "d"}, "dpp": {"kernel": "cosine"}}, "dpp.kernel"),
        ({"dataset": {"path": "d"}, "selection": {"mode": "threshold"}}, "selection.threshold"),
        ({"dataset": {"path": "d"}, "selection": {"mode": "token_budget"}}, "selection.token_budget"),
        ({"dataset": {"path": "d"}, "selection": {"fraction": 2}}, "selection.fraction"),
        ({"dataset": {"path": "d"}, "rules": {"count": 5}}, "cannot exceed rules.count"),
        ({"rules": {"count": 5}}, "dataset"),
        ({"dataset": {"path": "d"}, "seed": -1}, "seed"),
    ],
)
def test_bad_config_names_the_key(tmp_path, data, key):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, data))
    assert key in str(err.value) and "c.yaml" in str(err.value)


def test_unreadable_configs(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_overrides_use_dotted_keys(tmp_path):
    cfg = load_config(write(tmp_path, {"dataset": {"path": "d"}}), {"rating.sample_size": 77, "dpp.method": "sample"})
    assert cfg.rating.sample_size == 77 and cfg.dpp.method == "sample"


def test_fingerprint_tracks_sections():
    a = Config.model_validate({"dataset": {"path": "d"}})
    b = Config.model_validate({"dataset": {"path": "d"}, "dpp": {"k": 5}})
    assert a.fingerprint("rating") == b.fingerprint("rating")
    assert a.fingerprint("dpp") != b.fingerprint("dpp") and a.fingerprint() != b.fingerprint()


# --- overrides given as text (--set key=value) ------------------------------------------------------


@pytest.mark.parametrize(
    "key, text, value",
    [
        ("rating.structured_output", "off", "off"),  # YAML 1.1 (yaml.safe_load) made it False: rejected
        ("rating.structured_output", "on", "on"),
        ("rating.structured_output", " auto ", "auto"),
        ("cache.enabled", "true", True),
        ("cache.enabled", "false", False),
        ("cache.enabled", "no", False),  # a bool option takes YAML 1.1's words, as the config file does
        ("cache.enabled", "Yes", True),
        ("cache.enabled", "off", False),
        ("rating.sample_size", "500", 500),
        ("budget_usd", "2.5", 2.5),
        ("rating.rpm", "null", None),
        ("dataset.path", "[a.jsonl, b.jsonl]", ["a.jsonl", "b.jsonl"]),
        ("dataset.path", "data/*.jsonl", "data/*.jsonl"),
        ("task.description", "123", "123"),  # a string option keeps digits as text
        ("task.description", "Code #1: keep it whole", "Code #1: keep it whole"),  # no comment, no mapping
        ("task.description", "'quoted text'", "quoted text"),
        ("dataset.id_field", "123", "123"),
        ("dataset.id_field", "null", None),  # str | None: null is None
        ("run_dir", "2024-01-01", "2024-01-01"),  # YAML 1.1 read a date
        ("rating.price_per_million_tokens", "{input: 0, output: 0.5}", {"input": 0, "output": 0.5}),
        ("storage.options", "{anon: off, retries: 3}", {"anon": "off", "retries": 3}),  # YAML 1.2 inside
        ("cluster.dask_config.distributed.worker.profile.enabled", "false", False),
        ("cluster.dask_config.distributed.admin.tick.interval", "20ms", "20ms"),
    ],
)
def test_override_text_is_read_against_the_options_type(key, text, value):
    parsed = parse_override(key, text)
    assert parsed == value and type(parsed) is type(value)


def test_overrides_from_text_validate(tmp_path):
    sets = {"rating.structured_output": "off", "cache.enabled": "no", "dpp.k": "3", "task.description": "42"}
    cfg = load_config(write(tmp_path, {"dataset": {"path": "d"}}), {k: parse_override(k, t) for k, t in sets.items()})
    assert cfg.rating.structured_output == "off" and cfg.cache.enabled is False
    assert cfg.dpp.k == 3 and cfg.task.description == "42"


@pytest.mark.parametrize(
    "key, text, message",
    [
        ("cache.enabled", "maybe", "cache.enabled: Input should be a valid boolean"),
        ("rating.structured_output", "true", "rating.structured_output: Input should be"),  # True, not 'true'
        ("rating.sample_size", "many", "rating.sample_size: Input should be a valid integer"),
        ("rating.sample_sise", "500", "rating.sample_sise: Extra inputs are not permitted"),  # unknown key
        ("ratings.sample_size", "500", "ratings: Extra inputs are not permitted"),
    ],
)
def test_bad_override_text_names_the_key(tmp_path, key, text, message):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {"dataset": {"path": "d"}}), {key: parse_override(key, text)})
    assert message in str(err.value)


def test_override_text_that_is_not_yaml_names_the_key():
    with pytest.raises(ConfigError, match=r"rating.sample_size='\[1,': not valid YAML"):
        parse_override("rating.sample_size", "[1,")
    assert parse_override("task.description", "[unclosed: text") == "[unclosed: text"  # text stays text


def test_option_types_by_dotted_key():
    assert option_type("rating.sample_size") is int and option_type("cache.enabled") is bool
    assert option_type("rating.price_per_million_tokens.input") is float  # inside an optional section
    assert option_type("cluster.dask_config.distributed.worker.profile.enabled") is not None  # free-form: Any
    assert option_type("rating.sample_sise") is None and option_type("bogus.key") is None
    assert option_type("run_dir.x") is None


@pytest.mark.parametrize(
    "text, value",
    [
        ("off", "off"),
        ("yes", "yes"),
        ("y", "y"),
        ("True", True),
        ("FALSE", False),
        ("0755", 755),  # YAML 1.1: octal 493
        ("0o17", 15),
        ("0x1F", 31),
        ("1_000", "1_000"),  # YAML 1.1: 1000
        ("1:30", "1:30"),  # YAML 1.1: sexagesimal 90
        ("1e5", 100000.0),  # YAML 1.1 (PyYAML): a string
        ("-.inf", float("-inf")),
        ("~", None),
        ("", None),
        ("[1, off, {a: no}]", [1, "off", {"a": "no"}]),
    ],
)
def test_yaml12_core_schema(text, value):
    parsed = load_yaml12(text)
    assert parsed == value and type(parsed) is type(value)
    assert yaml.safe_load("off") is False  # the config file's loader is unchanged
