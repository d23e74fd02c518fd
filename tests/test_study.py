"""``sert-tui study``: figures clustered by question counted by hand, ``--vary`` parsed and refused, and a
two-seed, two-variant study (a tiny student) that shares the jobs a variant does not change and resumes after a
SIGKILL mid-study without duplicating a job."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.evaluation.stats import mcnemar_exact, wilson_interval
from engine.pipeline.study import Cell, summarize
from sert_tui.cli import main
from tests.conftest import make_evaluation, rt_files, save_tiny_student

TINY = """\
name = "tiny-study"
[student]
device = "cpu"
[data]
train_limit = 2
test_limit = 3
[sampling]
first_tokens = 2
per_branch = 1
max_new_tokens = 8
[filters]
min_tokens = 1
max_rep2 = 1.0
min_perplexity = 0.0
[train]
max_steps = 1
batch_size = 2
max_length = 64
save_steps = 100
[eval]
max_new_tokens = 8
batch_size = 8
baselines = false
"""


def test_summary_pools_seeds_by_hand(engine, sqa):
    # seed 0: SERT 6/10, Finetune 4/10; seed 1: SERT 8/10, Finetune 5/10
    s0 = {"SERT": [True] * 6 + [False] * 4, "Finetune": [True] * 4 + [False] * 6}
    s1 = {"SERT": [True] * 8 + [False] * 2, "Finetune": [False] * 5 + [True] * 5}
    cells = []
    for seed, runs in ((0, s0), (1, s1)):
        evals = {label: make_evaluation(engine, sqa.id, label, ok) for label, ok in runs.items()}
        cells.append(Cell("sqa", seed, status="completed", evaluations=evals))
    out = summarize(engine, cells)
    by_label = {c["label"]: c for c in out["cells"]}
    assert set(by_label) == {"SERT", "Finetune", "majority"}
    sert = by_label["SERT"]
    assert sert["seeds"] == [0, 1] and sert["n"] == 10  # questions, not (seed, question) pairs
    assert sert["acc"] == pytest.approx(0.7) and sert["acc_mean"] == pytest.approx(0.7)
    assert sert["acc_sd"] == pytest.approx(0.1414213, abs=1e-6)
    assert sert["acc_ci"] == pytest.approx(list(wilson_interval(7, 10)))
    (cmp,) = out["comparisons"]
    assert (cmp["a"], cmp["b"], cmp["n"], cmp["variant"]) == ("SERT", "Finetune", 10, "")
    # d_q per question: the mean over the 2 seeds of SERT's outcome minus Finetune's
    sert_q = [(a + b) / 2 for a, b in zip(s0["SERT"], s1["SERT"], strict=True)]
    fine_q = [(a + b) / 2 for a, b in zip(s0["Finetune"], s1["Finetune"], strict=True)]
    d = [x - y for x, y in zip(sert_q, fine_q, strict=True)]
    assert d == [0.5, 0.5, 0.5, 0.5, 1.0, 0.5, 0.0, 0.0, -0.5, -0.5]
    assert cmp["diff"] == pytest.approx(sum(d) / 10) == pytest.approx(0.7 - 0.45)
    assert (cmp["a_only"], cmp["b_only"]) == (6, 2)  # questions with d_q > 0, < 0
    # the sign-flip permutation test, enumerated by hand over the 2^10 sign vectors
    import itertools

    observed = abs(sum(d))
    hits = sum(abs(sum(s * x for s, x in zip(signs, d, strict=True))) >= observed - 1e-12
               for signs in itertools.product((1, -1), repeat=10))  # fmt: skip
    assert cmp["p_value"] == pytest.approx(hits / 2**10)


def test_a_deterministic_evaluation_shared_by_the_seeds_counts_once(engine, sqa):
    """Zero-shot is one evaluation whatever the seeds: three seeds of identical SERT outcomes against it give
    the diff, interval and p of one seed (exact McNemar), not a pooled n of 3 x 10."""
    sert = [True] * 7 + [False] * 3
    zero = [True, False] * 5
    zero_id = make_evaluation(engine, sqa.id, "zero-shot", zero)
    one = [Cell("sqa", 0, status="completed", evaluations={"SERT": make_evaluation(engine, sqa.id, "SERT", sert),
                                                          "zero-shot": zero_id})]  # fmt: skip
    three = [
        Cell(
            "sqa",
            seed,
            status="completed",
            evaluations={"SERT": make_evaluation(engine, sqa.id, "SERT", sert), "zero-shot": zero_id},
        )  # fmt: skip
        for seed in (0, 1, 2)
    ]
    (c1,) = summarize(engine, one)["comparisons"]
    out3 = summarize(engine, three)
    (c3,) = out3["comparisons"]
    for key in ("n", "diff", "diff_ci", "p_value", "a_only", "b_only"):
        assert c3[key] == pytest.approx(c1[key]), key
    assert c1["n"] == 10 and c1["p_value"] == pytest.approx(mcnemar_exact(3, 1))
    zero_row = next(c for c in out3["cells"] if c["label"] == "zero-shot")
    assert zero_row["n"] == 10 and zero_row["evaluations"] == 1 and zero_row["seeds"] == [0, 1, 2]


def test_vary_parses_a_grid_and_refuses_bad_keys_and_values():
    from db.errors import UserError
    from engine.config import ExperimentConfig
    from engine.pipeline.study import parse_vary

    config = ExperimentConfig()
    grid = parse_vary(["filters.select=rep2,confidence", "filters.min_perplexity=5,2.5"], config)
    assert [v.label for v in grid] == [
        "select=rep2 min_perplexity=5",
        "select=rep2 min_perplexity=2.5",
        "select=confidence min_perplexity=5",
        "select=confidence min_perplexity=2.5",
    ]
    assert parse_vary([], config)[0].label == ""
    for bad, message in (
        (["filters.nope=1,2"], "--vary filters.nope: no such config key"),
        (["nope.select=rep2"], "--vary nope.select: no such config key"),
        (["filters.select=rep2,bogus"], "--vary select=bogus"),
        (["filters.min_perplexity=-1"], "--vary min_perplexity=-1"),
        (["filters.select"], "expected SECTION.KEY=V1,V2"),
        (["filters.select=rep2,rep2"], "names one twice"),
        (["sampling.seed=1,2"], "the study sets it per cell"),
        (["filters.select=rep2", "filters.select=confidence"], "given twice"),
    ):
        with pytest.raises(UserError, match=re.escape(message)):
            parse_vary(bad, config)


def test_study_refuses_a_bad_vary_before_running(db_path, sqa, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    argv = ["--db", str(db_path), "study", str(config), "--datasets", "sqa", "--seeds", "0"]
    assert main([*argv, "--vary", "filters.select=rep2,bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --vary select=bogus: filters.select") and len(err.splitlines()) == 1, err
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    con.close()


def test_study_refuses_an_unknown_dataset_before_running(db_path, sqa, tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    argv = ["--db", str(db_path), "study", str(config), "--datasets", "sqa,nope", "--seeds", "0,1", "--json"]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.strip() == "error: no dataset named 'nope' (datasets: sqa)"
    assert "error" in json.loads(captured.out)
    con = sqlite3.connect(db_path)
    assert con.execute("SELECT COUNT(*) FROM jobs").fetchone() == (0,)
    con.close()
    assert main(["--db", str(db_path), "study", str(config), "--datasets", "sqa", "--seeds", "0,x"]) == 2
    assert "--seeds: 'x' is not an integer" in capsys.readouterr().err


def _jobs(db: Path, columns: str = "kind, fingerprint, status") -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(f"SELECT {columns} FROM jobs ORDER BY id").fetchall()
    finally:
        con.close()


VARY = """\
name = "vary"
[student]
model = "{student}"
device = "cpu"
[data]
train_limit = 3
test_limit = 3
[sampling]
first_tokens = 2
per_branch = 2
max_new_tokens = 8
[filters]
min_tokens = 1
max_rep2 = 1.0
min_perplexity = 0.0
[train]
max_steps = 1
batch_size = 2
max_length = 64
save_steps = 100
bf16 = "off"
[eval]
max_new_tokens = 8
batch_size = 8
"""


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    """The study's bookkeeping (which jobs, shared or not, resumed or not) is the same as with the real student."""
    return save_tiny_student(tmp_path_factory.mktemp("student"))


def test_vary_shares_unchanged_jobs_and_resumes_after_a_kill(db_path, tmp_path, tiny_student):
    """``--vary filters.select`` over 2 seeds: one sample job per seed, one Finetune and RD job per seed, one
    zero-shot evaluation in all; a SIGKILL mid-study and a re-run duplicate no job."""
    config = tmp_path / "vary.toml"
    config.write_text(VARY.format(student=tiny_student), encoding="utf-8")
    dataset, split = rt_files("strategy_qa")
    assert main(["--db", str(db_path), "data", "import", "reasoning-teacher", "--name", "sqa", "--dataset",
                 str(dataset), "--split", str(split), "--json"]) == 0  # fmt: skip
    rationales = dataset.parent.parent / "teacher-text-davinci-002" / "D_strategy_qa.json"
    assert main(["--db", str(db_path), "teacher", "import", "reasoning-teacher", "--dataset", "sqa",
                 "--file", str(rationales), "--json"]) == 0  # fmt: skip
    argv = [sys.executable, "-m", "sert_tui", "--db", str(db_path), "study", str(config), "--datasets", "sqa"]
    argv += ["--seeds", "0,1", "--vary", "filters.select=rep2,confidence", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:  # kill once the second seed's chain has started
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(k == "sample" for k, _fp, _st in _jobs(db_path)) == 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert any(st != "completed" for _k, _fp, st in _jobs(db_path))

    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    after = _jobs(db_path)
    assert len({(k, fp) for k, fp, _st in after}) == len(after)  # no job twice
    assert all(st == "completed" for _k, _fp, st in after)
    kinds = [k for k, _fp, _st in after]
    # per seed: 1 sample, 2 filter, 2 SERT, 2 SERT+RD + 1 RD, 1 Finetune; 1 teacher import; evaluations:
    # zero-shot once, and SERT, SERT+RD (2 variants) and RD, Finetune per seed
    expected = {"teacher": 1, "sample": 2, "filter": 4, "self-train": 4, "distill": 6, "finetune": 2, "eval": 13}
    assert {k: kinds.count(k) for k in expected} == expected and len(kinds) == sum(expected.values())
    runs = [(r["seed"], r["variant"], r["status"]) for r in result["runs"]]
    assert runs == [(s, f"select={v}", "completed") for s in (0, 1) for v in ("rep2", "confidence")]
    rows = {(c["variant"], c["label"]): c for c in result["cells"]}
    assert {("", "zero-shot"), ("", "Finetune"), ("", "RD"), ("", "majority")} <= rows.keys()
    for v in ("select=rep2", "select=confidence"):
        assert rows[(v, "SERT")]["n"] == 3 and rows[(v, "SERT")]["seeds"] == [0, 1]
        assert rows[(v, "SERT+RD")]["evaluations"] == 2
    assert rows[("", "zero-shot")]["evaluations"] == 1
    pairs = {(c["variant"], c["a"], c["b"], c["b_variant"]) for c in result["comparisons"]}
    assert ("select=confidence", "SERT", "SERT", "select=rep2") in pairs
    assert ("select=confidence", "SERT+RD", "SERT+RD", "select=rep2") in pairs
    assert ("select=rep2", "SERT", "Finetune", "") in pairs and ("", "RD", "zero-shot", "") in pairs
    assert all(c["n"] == 3 for c in result["comparisons"])
    assert [c["variant"] for c in result["coverage"]] == ["select=rep2", "select=confidence"]
    assert all(c["questions"] == 6 for c in result["coverage"])  # 3 train questions x 2 seeds
    # coverage pooled over the seeds' filter jobs, weighted by their questions, as report coverage counts each
    from db.session import open_workspace
    from engine.filtering.coverage import coverage

    with open_workspace(db_path).connect() as conn:
        for row in result["coverage"]:
            filters = [r["filter_job"] for r in result["runs"] if r["variant"] == row["variant"]]
            parts = [coverage(conn, j) for j in filters]
            assert len(parts) == 2 and sum(p["questions"] for p in parts) == 6
            for key in ("any_correct", "any_correct_filtered", "selected_correct"):
                assert row[key] == pytest.approx(sum(p[key] * p["questions"] for p in parts) / 6)
