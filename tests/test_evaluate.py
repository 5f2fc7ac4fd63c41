"""`orthoselect eval`: numbers on a hand-checkable case, labels files, and a run directory end to end."""

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from orthoselect.config import Config
from orthoselect.evaluation.evaluate import (
    EvalInputError,
    EvalRequest,
    align,
    evaluate,
    load_labels,
    run_eval,
    set_metrics,
)
from orthoselect.stages import RunContext, run_local
from support.configs import small_config
from support.corpus import corpus_labels


def test_set_metrics_on_a_hand_checkable_case():
    # 10 documents, binary labels; rule 0 ranks them perfectly, rule 1 is reversed
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    s = np.column_stack([np.linspace(0, 1, 10), np.linspace(1, 0, 10), np.linspace(0, 1, 10) ** 2])
    perfect = set_metrics(s, y, [0], top_fraction=0.2)
    assert perfect["auc"] == 1.0 and perfect["precision_top"] == 1.0 and perfect["docs"] == 10
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    assert perfect["mse"] == pytest.approx(np.mean((z(s[:, 0]) - z(y)) ** 2))
    # ranks 1..10 against a two-level label (tied ranks 3 and 8): the point-biserial 5 / (2 sd(1..10))
    assert perfect["spearman"] == pytest.approx(5 / (2 * np.sqrt(8.25)), abs=1e-9)
    reversed_ = set_metrics(s, y, [1], top_fraction=0.2)
    assert reversed_["auc"] == 0.0 and reversed_["precision_top"] == 0.0
    # the mean of rules 0 and 1 is constant: every document ties
    assert set_metrics(s, y, [0, 1], 0.2)["auc"] == 0.5
    # continuous labels: precision counts the selected documents among the true top 20 %
    cont = set_metrics(s, np.arange(10.0), [2], top_fraction=0.2)
    assert cont["auc"] is None and cont["precision_top"] == 1.0 and cont["spearman"] == pytest.approx(1.0)


def test_evaluate_compares_every_chooser_with_random_and_all_rules():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=400)
    good = [1 / (1 + np.exp(-(truth + 0.7 * rng.normal(size=400)))) for _ in range(8)]
    junk = [rng.random(400) for _ in range(4)]
    s = np.column_stack(good + junk)
    ids = [f"g{i}" for i in range(8)] + [f"j{i}" for i in range(4)]
    result = evaluate(s, ids, truth, k=4, random_subsets=200, seed=0)
    names = [c["chooser"] for c in result["choosers"]]
    assert names == [
        "quality/greedy",
        "quality/sample",
        "correlation/greedy",
        "correlation/sample",
        "gram/greedy",
        "gram/sample",
    ]
    default = result["choosers"][0]
    assert default["default"] and all(i.startswith("g") for i in default["chosen_ids"])
    assert default["win_rate"] > 0.9 and default["mse"] < result["random"]["mse"]["p50"]
    assert default["mse"] < result["all_rules"]["mse"]  # the mean of all rules includes the junk
    assert len(result["random_mse"]) == 200 and result["random"]["mse"]["n"] == 200
    # across random subsets, orthogonality goes with junk here, so it predicts a *worse* MSE
    assert result["pearson_rho_mse"] < 0 and result["pearson_fidelity_mse"] < 0
    assert [p["r"] for p in result["mse_by_r"]] == list(range(1, 13))
    json.dumps(result)  # plain values only


def write_labels(path, rows, header="doc_id,label"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n")
    return str(path)


def test_labels_files_and_their_errors(tmp_path):
    csv = write_labels(tmp_path / "l.csv", ["a,1", "b,0.5", "a,1"])
    assert load_labels(csv).to_dict() == {"a": 1.0, "b": 0.5}
    jsonl = tmp_path / "l.jsonl"
    jsonl.write_text('{"id": 7, "grade": 3}\n{"id": 8, "grade": 4}\n')
    assert load_labels(str(jsonl), id_field="id", label_field="grade").to_dict() == {"7": 3.0, "8": 4.0}
    pq = tmp_path / "l.parquet"
    pd.DataFrame({"doc_id": ["x"], "label": [1.0]}).to_parquet(pq)
    assert load_labels(str(pq)).to_dict() == {"x": 1.0}
    with pytest.raises(EvalInputError, match=r"l2.csv, line 3: label 'high' is not a number"):
        load_labels(write_labels(tmp_path / "l2.csv", ["a,1", "b,high"]))
    with pytest.raises(EvalInputError, match="no column 'label'"):
        load_labels(write_labels(tmp_path / "l3.csv", ["a,1"], header="doc_id,score"))
    with pytest.raises(EvalInputError, match="'a' has different labels"):
        load_labels(write_labels(tmp_path / "l4.csv", ["a,1", "a,0"]))
    with pytest.raises(EvalInputError, match="not found"):
        load_labels(str(tmp_path / "missing.csv"))


def test_align_needs_enough_labelled_documents():
    labels = pd.Series([1.0, 0.0], index=["a", "b"])
    with pytest.raises(EvalInputError, match="only 2 of the 3 sample documents have a label"):
        align(["a", "b", "c"], np.zeros((3, 2)), labels)


@pytest.fixture(scope="module")
def finished_run(corpus_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("evalrun")
    ctx = RunContext(Config.model_validate(small_config(corpus_dir, run_dir)))
    run_local(ctx)
    return ctx


def test_run_eval_on_a_run_directory_writes_table_json_and_plots(finished_run, corpus_dir, tmp_path):
    labels = corpus_labels(corpus_dir, tmp_path / "labels.csv")
    outcome = run_eval(
        EvalRequest(run_dir=finished_run.cfg.run_dir, labels=labels, out=str(tmp_path / "eval"), random_subsets=100)
    )
    assert outcome["counts"] == {
        "sample_docs": 300,
        "labelled": 300,
        "sample_without_label": 0,
        "labels_outside_sample": 900,
    }
    result = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert result["k"] == 6 and result["binary_labels"] and len(result["choosers"]) == 6
    chosen = finished_run.storage.read_json("rule_selection.json")["chosen_ids"]
    assert result["choosers"][0]["chosen_ids"] == chosen  # the default is the run's own choice
    for png in ("eval_mse_vs_random.png", "eval_mse_vs_r.png"):
        assert (tmp_path / "eval" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (tmp_path / "eval" / "eval.md").read_text()
    assert "quality/greedy (default)" in table and "all 24 rules" in table and "AUC" in table


def test_eval_command(finished_run, corpus_dir, tmp_path):
    from flows.cli import app

    labels = corpus_labels(corpus_dir, tmp_path / "labels.csv")
    runner = CliRunner()
    done = runner.invoke(
        app,
        ["eval", finished_run.cfg.run_dir, "--labels", labels, "--out", str(tmp_path / "e"), "--random-subsets", "50"],
    )
    assert done.exit_code == 0, done.output
    assert "OrthoSelect eval" in done.output and "written:" in done.output
    assert len(json.loads((tmp_path / "e" / "eval.json").read_text())["choosers"]) == 6
    bad = runner.invoke(app, ["eval", finished_run.cfg.run_dir, "--labels", str(tmp_path / "nope.csv")])
    assert bad.exit_code == 2 and "not found" in bad.output
