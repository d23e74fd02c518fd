"""``sert-tui study``: pooled figures counted by hand, a two-seed study on the real student, and a resume after
SIGKILL mid-study that duplicates no job."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlmodel import select

from db.models import Evaluation, Prediction, Question
from db.session import session_scope
from engine.evaluation.stats import mcnemar_exact, wilson_interval
from engine.jobs import create_job
from engine.pipeline.study import Cell, summarize
from sert_tui.cli import main
from tests.conftest import rt_files

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


def _evaluation(engine, dataset_id: int, label: str, correct: list[bool]) -> int:
    job = create_job(engine, "eval", {}, dataset_id=dataset_id)
    with session_scope(engine) as s:
        qids = s.exec(
            select(Question.id).where(Question.dataset_id == dataset_id, Question.split == "test").order_by(Question.id)
        ).all()[: len(correct)]
        ev = Evaluation(
            job_id=job.id, label=label, dataset_id=dataset_id, n=len(correct), acc=sum(correct) / len(correct)
        )
        s.add(ev)
        s.flush()
        for qid, ok in zip(qids, correct, strict=True):
            s.add(Prediction(evaluation_id=ev.id, question_id=qid, correct=ok))
        return ev.id


def test_summary_pools_seeds_by_hand(engine, sqa):
    # seed 0: SERT 6/10, Finetune 4/10; seed 1: SERT 8/10, Finetune 5/10
    s0 = {"SERT": [True] * 6 + [False] * 4, "Finetune": [True] * 4 + [False] * 6}
    s1 = {"SERT": [True] * 8 + [False] * 2, "Finetune": [False] * 5 + [True] * 5}
    cells = []
    for seed, runs in ((0, s0), (1, s1)):
        evals = {label: _evaluation(engine, sqa.id, label, ok) for label, ok in runs.items()}
        cells.append(Cell("sqa", seed, status="completed", evaluations=evals))
    out = summarize(engine, cells)
    by_label = {c["label"]: c for c in out["cells"]}
    assert set(by_label) == {"SERT", "Finetune", "majority"}
    sert = by_label["SERT"]
    assert sert["seeds"] == [0, 1] and sert["n"] == 20
    assert sert["acc_mean"] == pytest.approx(0.7) and sert["acc_sd"] == pytest.approx(0.1414213, abs=1e-6)
    assert sert["acc_ci"] == pytest.approx(list(wilson_interval(14, 20)))
    (cmp,) = out["comparisons"]
    assert (cmp["a"], cmp["b"], cmp["n"]) == ("SERT", "Finetune", 20)
    assert cmp["diff"] == pytest.approx(0.7 - 0.45)
    # discordant pairs: seed 0 has 2 SERT-only (questions 4, 5); seed 1 has 5 SERT-only (0-4), 2 Finetune-only (8, 9)
    a_only = sum(a and not b for r in (s0, s1) for a, b in zip(r["SERT"], r["Finetune"], strict=True))
    b_only = sum(b and not a for r in (s0, s1) for a, b in zip(r["SERT"], r["Finetune"], strict=True))
    assert (cmp["a_only"], cmp["b_only"]) == (a_only, b_only) == (7, 2)
    assert cmp["p_value"] == pytest.approx(mcnemar_exact(7, 2))


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


@pytest.mark.model
@pytest.mark.slow
def test_two_seed_study_resumes_after_a_kill(db_path, tmp_path):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY, encoding="utf-8")
    dataset, split = rt_files("strategy_qa")
    assert main(["--db", str(db_path), "data", "import", "reasoning-teacher", "--name", "sqa", "--dataset",
                 str(dataset), "--split", str(split), "--json"]) == 0  # fmt: skip
    argv = [sys.executable, "-m", "sert_tui", "--db", str(db_path), "study", str(config)]
    argv += ["--datasets", "sqa", "--seeds", "0,1", "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:  # kill once the second seed's chain has started: one cell done, one half-way
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and proc.poll() is None:
            if sum(k == "sample" for k, _fp, _st in _jobs(db_path)) == 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = _jobs(db_path)
    assert any(st != "completed" for _k, _fp, st in before)

    out = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert "resuming" in out.stderr or "already completed" in out.stderr
    after = _jobs(db_path)
    assert len({(k, fp) for k, fp, _st in after}) == len(after)  # no job twice
    assert all(st == "completed" for _k, _fp, st in after)
    assert sorted(k for k, _fp, _st in after) == sorted(["sample", "filter", "self-train", "eval"] * 2)
    assert [(r["seed"], r["status"]) for r in result["runs"]] == [(0, "completed"), (1, "completed")]
    (sert,) = [c for c in result["cells"] if c["label"] == "SERT"]
    assert sert["seeds"] == [0, 1] and sert["n"] == 6 and len(sert["acc_ci"]) == 2
    assert any(c["label"] == "majority" for c in result["cells"])
    assert result["comparisons"] == []  # no baselines in this config: nothing to pair with
    # coverage pooled over the seeds' sample jobs, weighted by their questions, as report coverage counts each
    from db.session import open_workspace
    from engine.filtering.coverage import coverage

    (cov,) = result["coverage"]
    assert cov["dataset"] == "sqa" and cov["seeds"] == [0, 1]
    kinds = dict(_jobs(db_path, "id, kind"))
    samples = [j for r in result["runs"] for j in r["jobs"] if kinds.get(j) == "sample"]
    with open_workspace(db_path).connect() as conn:
        parts = [coverage(conn, j) for j in samples]
    assert len(parts) == 2 and cov["questions"] == sum(p["questions"] for p in parts) == 4  # 2 train questions x 2
    for key in ("any_correct", "any_correct_filtered", "selected_correct"):
        assert cov[key] == pytest.approx(sum(p[key] * p["questions"] for p in parts) / 4)
