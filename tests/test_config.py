"""The config model: every option documented, bad configs fail before any work, naming the key."""

from pathlib import Path

import pytest
import yaml

from orthoselect.config import Config, ConfigError, load_config
from orthoselect.config_doc import documented_yaml

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
