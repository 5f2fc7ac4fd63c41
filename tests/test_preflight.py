"""Configs that cannot run fail before any work: the preflight check (rules file against dpp.k, the
simulated bank, the models' providers, the dataset's files), from the library and from the CLI (exit 2,
one line naming the key, no Prefect API or Dask cluster started); it runs once per run; unreadable files
found later are the dataset's ShardError; the step tasks do not retry what cannot be transient; a sample
as large as the pool stops the sample step unless asked for, and `orthoselect estimate` says so. S3
locations: tests/test_preflight_s3.py."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec.implementations.local
import pytest
import yaml
from typer.testing import CliRunner, Result

from orthoselect.config import Config, ConfigError, DatasetConfig, load_config
from orthoselect.data.shards import ShardError, discover_shards
from orthoselect.preflight import checks as preflight_module
from orthoselect.preflight.checks import preflight
from orthoselect.scoring.simulated import BANK_RULES, simulated_rules
from orthoselect.stages import RunContext, run_local
from support.configs import small_config


def write_data(folder: Path, shards: int = 3, docs: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        rows = [
            {"id": f"s{s}-d{i}", "text": f"Document {i} of shard {s} explains one thing clearly."} for i in range(docs)
        ]
        (folder / f"part-{s}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def write_rules(path: Path, count: int) -> Path:
    path.write_text("".join(r + "\n" for r in simulated_rules(count, seed=0)))
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_data(tmp_path / "data")


@pytest.fixture
def deny(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Path], None]]:
    """`deny(path)`: the file can be listed but not opened. chmod 000; as root, whom permission bits do
    not stop, opening it through fsspec's local filesystem raises PermissionError as it would."""
    denied: set[str] = set()
    original = fsspec.implementations.local.LocalFileSystem._open

    def _open(self: Any, path: str, *args: Any, **kwargs: Any) -> Any:
        if os.path.abspath(self._strip_protocol(path)) in denied:
            raise PermissionError(13, "Permission denied", path)
        return original(self, path, *args, **kwargs)

    if os.geteuid() == 0:
        monkeypatch.setattr(fsspec.implementations.local.LocalFileSystem, "_open", _open)

    def deny_(path: Path) -> None:
        path.chmod(0)
        denied.add(str(path.resolve()))

    yield deny_
    for p in denied:
        Path(p).chmod(0o644)


def config(data: Path | str, tmp_path: Path, **over: Any) -> Config:
    return load_config(small_config(data, tmp_path / "run", **over))


def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run directories of the configs preflight checks the dataset of, from now on."""
    calls: list[str] = []
    check = preflight_module._check_dataset

    def counted(cfg: Config) -> list[str]:
        calls.append(cfg.run_dir)
        return check(cfg)

    monkeypatch.setattr(preflight_module, "_check_dataset", counted)
    return calls


# --- the library ----------------------------------------------------------------------------------
def test_a_good_config_passes_and_warns_of_empty_files(data, tmp_path):
    assert preflight(config(data, tmp_path)) == []
    (data / "part-9.jsonl").write_text("")
    [warning] = preflight(config(data, tmp_path))
    assert warning == f"dataset.path: {data / 'part-9.jsonl'} is empty (0 bytes): its scan will fail"


def test_more_rules_kept_than_the_rules_file_holds(data, tmp_path):
    rules = write_rules(tmp_path / "rules.txt", 8)
    with pytest.raises(ConfigError) as e:
        preflight(config(data, tmp_path, rules={"file": str(rules)}, dpp={"k": 12}))
    assert str(e.value) == f"dpp.k: 12 is more than the 8 rules in rules.file {rules}"
    assert preflight(config(data, tmp_path, rules={"file": str(rules)}, dpp={"k": 8})) == []
    with pytest.raises(ConfigError, match=r"^rules.file .*missing.txt: cannot read"):
        preflight(config(data, tmp_path, rules={"file": str(tmp_path / "missing.txt")}))


def test_more_simulated_rules_than_the_bank_holds(data, tmp_path):
    with pytest.raises(ConfigError) as e:
        preflight(config(data, tmp_path, rules={"count": len(BANK_RULES) + 1, "model": "simulated"}))
    assert str(e.value).startswith(f"rules.count: {len(BANK_RULES) + 1} is more than the {len(BANK_RULES)} rules")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name lookup or connection from this process fails the test."""
    import socket

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the network was used: {args[:2]}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


def model_error(data: Path, tmp_path: Path, **over: Any) -> str:
    with pytest.raises(ConfigError) as e:
        preflight(config(data, tmp_path, **over))
    return str(e.value)


def test_models_are_checked_against_litellms_providers_offline(data, tmp_path, offline, capsys):
    assert model_error(data, tmp_path, rating__model="opneai/gpt-4o-mini") == (
        "rating.model: unknown provider 'opneai' in 'opneai/gpt-4o-mini' (nearest: openai, opensearch); expected "
        "provider/model, e.g. openai/gpt-4o-mini, or hosted_vllm/opneai/gpt-4o-mini for a model an "
        "OpenAI-compatible server serves under that name (providers: https://docs.litellm.ai/docs/providers)"
    )
    assert model_error(data, tmp_path, rules__model="llama3") == (
        "rules.model: 'llama3' has no provider prefix and litellm cannot tell its provider; expected "
        "provider/model, e.g. openai/llama3, ollama/llama3 or hosted_vllm/llama3 "
        "(providers: https://docs.litellm.ai/docs/providers)"
    )
    message = model_error(data, tmp_path, rating__model="meta-llama/Meta-Llama-3-8B-Instruct")
    assert message.startswith("rating.model: unknown provider 'meta-llama' in 'meta-llama/Meta-Llama-3-8B-Instruct' (")
    assert "hosted_vllm/meta-llama/Meta-Llama-3-8B-Instruct" in message
    assert model_error(data, tmp_path, rating__model="openai/") == (
        "rating.model: 'openai/' names no model after the provider; expected provider/model, e.g. openai/<model>"
    )
    for good in ("anthropic/claude-3-5-sonnet-20240620", "ollama/llama3", "gpt-4o-mini", "groq/llama3-8b-8192"):
        assert preflight(config(data, tmp_path, rating__model=good)) == [], good
    assert capsys.readouterr().out == ""  # litellm's own "Provider List" lines are not printed


def test_litellm_is_imported_only_for_providers_it_must_tell(data, tmp_path, monkeypatch):
    """Simulated models, and providers the lean HTTP client serves, need no litellm import (~3 s)."""
    import orthoselect.config.env

    def refuse() -> Any:
        raise AssertionError("litellm was imported")

    monkeypatch.setattr(orthoselect.config.env, "import_litellm", refuse)
    for model in ("simulated", "openai/gpt-4o-mini", "hosted_vllm/meta-llama/Meta-Llama-3-8B-Instruct"):
        assert preflight(config(data, tmp_path, rating__model=model)) == [], model


def test_the_rules_model_is_not_checked_when_rules_come_from_a_file(data, tmp_path, offline):
    rules = write_rules(tmp_path / "rules.txt", 8)
    assert preflight(config(data, tmp_path, rules={"file": str(rules), "model": "no-such-model"})) == []


def test_a_dataset_path_that_matches_nothing(data, tmp_path):
    with pytest.raises(ConfigError) as e:
        preflight(config(data / "*.parquet", tmp_path))
    assert str(e.value) == f"dataset.path: no .jsonl/.parquet file matches '{data / '*.parquet'}'"
    with pytest.raises(ConfigError, match=r"^dataset.path: '.*nowhere' does not exist$"):
        preflight(config(tmp_path / "nowhere", tmp_path))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^dataset.path: no .jsonl/.parquet file matches '.*empty'$"):
        preflight(config(tmp_path / "empty", tmp_path))
    # one pattern of a list matching nothing is a warning, not an error
    [warning] = preflight(config(data, tmp_path, dataset__path=[str(data), str(tmp_path / "empty" / "*.jsonl")]))
    assert warning == f"dataset.path: '{tmp_path / 'empty' / '*.jsonl'}' matches no .jsonl/.parquet file"


def test_an_unreadable_shard(data, tmp_path, deny):
    deny(data / "part-1.jsonl")
    with pytest.raises(ConfigError) as e:
        preflight(config(data, tmp_path))
    assert str(e.value) == f"dataset.path: {data / 'part-1.jsonl'} cannot be read (permission denied)"
    deny(data / "part-2.jsonl")
    with pytest.raises(ConfigError, match=r"part-1.jsonl cannot be read \(permission denied\) \(and 1 more files\)$"):
        preflight(config(data, tmp_path))


def test_the_plan_step_names_an_unreadable_shard_as_a_shard_error(data, deny):
    """Files can change after the check: the plan's fingerprinting raises the dataset's own error."""
    deny(data / "part-1.jsonl")
    with pytest.raises(ShardError, match=r"^dataset.path: .*part-1.jsonl cannot be read \(permission denied\)$"):
        discover_shards(DatasetConfig(path=str(data)))
    with pytest.raises(ShardError, match=r"^dataset.path: '.*nowhere' does not exist$"):
        discover_shards(DatasetConfig(path=str(data / "nowhere")))


def test_start_run_checks_unless_the_entry_point_just_did(data, tmp_path, monkeypatch):
    from flows.pipeline import start_run

    calls = count_checks(monkeypatch)
    cfg = config(data, tmp_path)
    start_run(cfg)  # a deployment: start_run is the boundary
    assert len(calls) == 1
    preflight(cfg, remember=True)  # the CLI, before the Prefect API
    start_run(cfg)
    assert len(calls) == 2  # not again
    start_run(cfg)
    assert len(calls) == 3  # the next run of the same config checks again
    with pytest.raises(ConfigError, match="dataset.path"):
        start_run(small_config(tmp_path / "nowhere", tmp_path / "run"))


# --- the CLI ----------------------------------------------------------------------------------------
@pytest.fixture
def no_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command that starts a Prefect API or a Dask cluster fails the test."""
    import flows.runtime

    def refuse(*args: Any, **kwargs: Any) -> Iterator[str]:
        raise AssertionError("a Prefect API or a Dask cluster was started")

    monkeypatch.setattr(flows.runtime, "prefect_api", refuse)
    monkeypatch.setattr(flows.runtime, "dask_cluster", refuse)


def cli(tmp_path: Path, cfg: dict[str, Any], *args: str) -> Result:
    """`orthoselect <args> <config file of cfg>` (default: run --no-progress). Whether it stopped before any
    work is what the `no_servers` fixture and the exit code say, not a timing."""
    from flows.cli import app

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    command = [*args, str(path)] if args else ["run", str(path), "--no-progress"]
    return CliRunner().invoke(app, command)


@pytest.mark.parametrize("command", [["run"], ["score-pool"], ["estimate"]])
def test_bad_configs_exit_2_in_one_line_before_any_server(command, data, tmp_path, deny, no_servers):
    rules = write_rules(tmp_path / "rules.txt", 8)
    bad = {
        f"dpp.k: 12 is more than the 8 rules in rules.file {rules}": small_config(
            data, tmp_path / "run", rules={"file": str(rules)}, dpp={"k": 12}
        ),
        f"dataset.path: no .jsonl/.parquet file matches '{data / '*.parquet'}'": small_config(
            data / "*.parquet", tmp_path / "run"
        ),
        f"dataset.path: {data / 'part-1.jsonl'} cannot be read (permission denied)": small_config(
            data, tmp_path / "run"
        ),
    }
    deny(data / "part-1.jsonl")
    for message, cfg in bad.items():
        result = cli(tmp_path, cfg, *command)
        assert (result.exit_code, result.output) == (2, message + "\n"), result.output


def test_a_bad_model_exits_2_in_one_line_before_any_server(data, tmp_path, no_servers):
    result = cli(tmp_path, small_config(data, tmp_path / "run", rating={"model": "opneai/gpt-4o-mini"}))
    assert result.exit_code == 2, result.output
    assert result.output.startswith("rating.model: unknown provider 'opneai' in 'opneai/gpt-4o-mini' (nearest: ")
    assert result.output.count("\n") == 1


def test_the_cli_checks_once_and_shows_warnings(data, tmp_path, monkeypatch, no_servers):
    calls = count_checks(monkeypatch)
    (data / "part-9.jsonl").write_text("")
    result = cli(tmp_path, small_config(data, tmp_path / "run"))
    assert isinstance(result.exception, AssertionError)  # it went on to start the Prefect API (refused here)
    assert result.output == f"dataset.path: {data / 'part-9.jsonl'} is empty (0 bytes): its scan will fail\n"
    assert len(calls) == 1  # `_load` checked it; `_run` did not check it again
    assert preflight_module.consume(config(data, tmp_path))  # and start_run would not either


def test_retry_failed_checks_the_run_directorys_config(data, tmp_path, no_servers):
    from flows.cli import app

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump(small_config(data / "gone", run_dir)))
    result = CliRunner().invoke(app, ["retry-failed", str(run_dir), "--no-progress"])
    assert (result.exit_code, result.output) == (2, f"dataset.path: '{data / 'gone'}' does not exist\n")


# --- retries -----------------------------------------------------------------------------------------
def failed_state(error: BaseException) -> Any:
    from prefect.states import Failed

    return Failed(data=error)


def test_step_tasks_do_not_retry_what_cannot_be_transient():
    from orthoselect.choice.inference import KernelRankError
    from orthoselect.data.shards import ShardError
    from orthoselect.rules.sets import RulesError
    from tasks.steps import RUN_UNIT, Failure, StepFailed, run_step, shard_step, worth_retrying

    assert run_step.retry_condition_fn is worth_retrying
    assert shard_step.with_options(retries=2).retry_condition_fn is worth_retrying

    def whole_run(cause: Exception) -> StepFailed:
        try:
            raise StepFailed("dpp", {RUN_UNIT: Failure.of(cause)}) from cause
        except StepFailed as e:
            return e

    def retried(error: BaseException) -> bool:
        return worth_retrying(None, None, failed_state(error))

    assert not retried(whole_run(KernelRankError(6, 3)))
    assert not retried(whole_run(RulesError("only 3 distinct rules for dpp.k = 6")))
    assert not retried(whole_run(ConfigError("dataset.path: ...")))
    assert retried(whole_run(ConnectionError("S3 went away")))
    # a whole-run failure that lost its __cause__ (pickled) is judged by its recorded class name
    assert not retried(StepFailed("rules", {RUN_UNIT: Failure("RulesError", "no rules found")}))

    unreadable = Failure.of(ShardError("dataset.path: part-1.jsonl cannot be read (permission denied)"))
    outage = Failure("EndpointConnectionError", "Could not connect to the endpoint URL")
    assert not retried(StepFailed("scan", {"part-1": unreadable}))
    assert not retried(StepFailed("scan", {"part-1": unreadable, "part-2": Failure("MissingOutput", "no index")}))
    assert retried(StepFailed("scan", {"part-1": unreadable, "part-2": outage}))  # part-2 may pass next time
    assert retried(StepFailed("score", {"part-2": outage}))
    assert retried(RuntimeError("the task itself crashed"))
    assert not retried(ShardError("raised outside a step"))


# --- a sample as large as the pool ------------------------------------------------------------------
def test_a_sample_as_large_as_the_pool_stops_the_sample_step(data, tmp_path):
    """The pool is known once the shards are scanned: the sample step refuses to make the whole pool the
    sample (R x N ratings, the DPP saves nothing) with a ConfigError, which no task retries."""
    ctx = RunContext(config(data, tmp_path, rating={"model": "simulated", "sample_size": 60}))  # 3 x 20 docs
    with pytest.raises(ConfigError) as e:
        run_local(ctx, stages=("index_pool",))
    assert str(e.value) == (
        "rating.sample_size: 60 is at least the pool's 60 documents: the whole pool would be the sample, rated "
        "against all R rules (R x N requests; choosing r rules saves nothing); lower rating.sample_size below "
        "60, or set rating.allow_sample_is_pool: true to rate the whole pool"
    )
    assert not ctx.storage.exists("sample.parquet")
    assert ctx.read_marker("sample") is None  # not done: the run with a fixed config draws the sample


def test_a_sample_as_large_as_the_pool_when_asked_for(data, tmp_path, caplog):
    from orthoselect.stages import STEPS

    asked = {"model": "simulated", "sample_size": 60, "allow_sample_is_pool": True}
    ctx = RunContext(config(data, tmp_path, rating=asked))
    with caplog.at_level(logging.WARNING, logger="orthoselect"):
        run_local(ctx, stages=("index_pool",))
    stats = STEPS["sample"].read_stats(ctx, None)
    assert stats.sample_is_pool and stats.sampled == stats.pool == 60
    assert "rating.sample_size 60 is at least the pool's 60 documents" in caplog.text
    [artifact] = STEPS["sample"].artifacts(ctx, stats.to_dict())
    assert "**Warning**: rating.sample_size 60" in str(artifact.data)

    smaller = RunContext(config(data, tmp_path / "b", rating={"model": "simulated", "sample_size": 59}))
    run_local(smaller, stages=("index_pool",))
    assert not STEPS["sample"].read_stats(smaller, None).sample_is_pool


def test_estimate_says_the_sample_is_the_pool(data, tmp_path, no_servers):
    cfg = small_config(data, tmp_path / "run", rating={"model": "simulated", "sample_size": 5000})
    result = cli(tmp_path, cfg, "estimate")
    assert result.exit_code == 0, result.output
    assert "**Warning: the sample is the whole pool**" in result.output  # piped: the Markdown as it is
    result = cli(tmp_path, cfg, "estimate", "--json")
    assert json.loads(result.output[result.output.index("{") :])["sample_is_pool"] is True
    cfg["rating"]["sample_size"] = 30
    result = cli(tmp_path, cfg, "estimate")
    assert result.exit_code == 0 and "whole pool" not in result.output


def test_estimate_piped_prints_its_whole_table(data, tmp_path, no_servers):
    """Output to a pipe (not a terminal) is the Markdown itself: before, rich cut the table at 80 columns."""
    from orthoselect.preflight.estimate import estimate, render_estimate

    cfg = small_config(data, tmp_path / "run", rating={"model": "simulated", "sample_size": 30})
    result = cli(tmp_path, cfg, "estimate")
    assert result.exit_code == 0, result.output
    table = [line for line in result.output.splitlines() if line.startswith("|")]
    assert table and max(len(line) for line in table) > 80
    expected = render_estimate(estimate(Config.model_validate(cfg), sample_docs=200))
    assert [line for line in expected.splitlines() if line.startswith("|")][0] == table[0]
