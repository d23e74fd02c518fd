"""Self-training rounds (`run CONFIG --stage self-train --rounds N`) of a tiny student with the bundled student's
tokenizer (tests/conftest.py: the check is the rounds' lineage, resume and report, not what they learn): round
2 samples with round 1's checkpoint and trains from it, every round is evaluated, the report shows a row per
round, round 1 is the single-round self-train job, and a killed round resumes where it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from db.models import Checkpoint, Evaluation, Job, Prediction
from db.session import session_scope
from tests.conftest import run_cli as cli

pytestmark = [pytest.mark.slow]

CONFIG = """\
name = "rounds"
[student]
model = "{student}"
[data]
dataset = "sqa"
train_limit = 2
test_limit = 2
[sampling]
first_tokens = 2
per_branch = 2
max_new_tokens = 16
batch_size = 16
[filters]  # loose, so that every question keeps a path at this size
min_tokens = 1
max_rep2 = 1.0
min_perplexity = 0.0
[train]
max_steps = 1
batch_size = 2
max_length = 96
save_steps = 100
[eval]
max_new_tokens = 8
batch_size = 8
"""


def jobs_of(engine) -> dict[int, Job]:
    with session_scope(engine) as s:
        return {j.id: j for j in s.exec(select(Job)).all()}  # type: ignore[misc]


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> str:
    from tests.conftest import save_tiny_student

    return str(save_tiny_student(tmp_path_factory.mktemp("student")))


def test_two_rounds_chain_evaluate_report_and_resume(engine, sqa, db_path, tmp_path, student):
    config = tmp_path / "rounds.toml"
    config.write_text(CONFIG.format(student=student))
    out, err = cli(db_path, "run", config, "--stage", "self-train", "--rounds", 2, "--json")
    doc = json.loads(out)
    by_id = jobs_of(engine)
    assert [j["kind"] for j in doc["jobs"]] == [
        *["sample", "filter", "self-train", "eval", "eval"],  # round 1, then zero-shot beside it
        *["sample", "filter", "self-train", "eval"],  # round 2
    ]
    assert all(j["status"] == "completed" for j in doc["jobs"]), doc
    assert len(by_id) == 9
    r1, r2 = doc["rounds"]
    assert (r1["round"], r1["label"], r2["round"], r2["label"]) == (1, "SERT", 2, "SERT r2")

    # Round 1 is today's chain with the base model; round 2 samples with round 1's final checkpoint ...
    ckpt1 = r1["checkpoint"]
    with session_scope(engine) as s:
        final1 = s.exec(select(Checkpoint).where(Checkpoint.job_id == r1["jobs"]["self-train"])).one()
    assert final1.is_final and final1.path == ckpt1 and Path(ckpt1).is_dir()
    assert r1["start_model"] == student and r2["start_model"] == ckpt1
    sample1, sample2 = by_id[r1["jobs"]["sample"]], by_id[r2["jobs"]["sample"]]
    assert sample1.config["student"]["model"] == student
    assert sample2.config["student"]["model"] == ckpt1
    assert sample2.fingerprint != sample1.fingerprint and sample2.summary["paths"] == 2 * 2 * 2
    # ... filters its paths and trains from that checkpoint, with a lineage of its own.
    filter2, train1, train2 = (
        by_id[r2["jobs"]["filter"]],
        by_id[r1["jobs"]["self-train"]],
        by_id[r2["jobs"]["self-train"]],
    )
    assert filter2.parent_id == sample2.id and train2.parent_id == filter2.id
    assert train2.summary["start_model"] == ckpt1 and train2.summary["round"] == 2
    assert train2.summary["start"] == {"kind": "self-train", "job": train1.id, "checkpoint": ckpt1, "round": 1}
    assert train1.summary["start_model"] == student and "round" not in train1.summary
    assert (train1.label, train2.label) == ("SERT", "SERT r2")
    assert r2["checkpoint"] != ckpt1 and Path(r2["checkpoint"]).parent.name == f"job-{train2.id}"

    # Every round's model is evaluated, and the zero-shot base model beside round 1.
    with session_scope(engine) as s:
        evaluations = {e.label: e for e in s.exec(select(Evaluation)).all()}
    assert set(evaluations) == {"zero-shot", "SERT", "SERT r2"}
    assert evaluations["SERT r2"].model_ref == r2["checkpoint"] and evaluations["SERT"].model_ref == ckpt1
    for r in (r1, r2):
        acc = r["accuracy"]
        e = evaluations[r["label"]]
        assert (acc["label"], acc["n"], acc["acc"], acc["evaluation"]) == (r["label"], 2, e.acc, e.id)
        assert acc["acc_ci"][0] <= acc["acc"] <= acc["acc_ci"][1]
    assert doc["zero_shot"]["accuracy"]["label"] == "zero-shot" and doc["zero_shot"]["accuracy"]["n"] == 2
    assert "rounds: step 9 of 9: round 2 of 2: eval (SERT r2)" in err

    # The report: a row per round (its keys as ever) and a column per round after SERT.
    rows = json.loads(cli(db_path, "report", "runs", "--json")[0])
    assert isinstance(rows, list)
    assert sorted(r["label"] for r in rows) == ["SERT", "SERT r2", "majority", "zero-shot"]
    from engine.evaluation.report import JSON_KEYS

    assert all(set(JSON_KEYS) <= set(r) for r in rows)
    assert next(r for r in rows if r["label"] == "SERT r2")["checkpoint"] == r2["checkpoint"]
    text = cli(db_path, "report", "runs")[0]
    header = next(line for line in text.splitlines() if line.startswith("student"))
    assert header.index("SERT ") < header.index("SERT r2") < header.index("zero-shot") < header.index("majority")

    # Round 1 is the single-round stage's job: `run --stage self-train` finds it complete (same fingerprint).
    single = json.loads(cli(db_path, "run", config, "--stage", "self-train", "--json")[0])
    assert single == {"jobs": [{"id": train1.id, "kind": "self-train", "status": "completed"}]}

    # A run killed in round 2's evaluation, one of its two predictions written (its row still says running):
    # run again, the finished jobs of rounds 1 and 2 are skipped and round 2's evaluation resumes.
    eval2 = r2["jobs"]["eval"]
    with session_scope(engine) as s:
        evaluation = s.exec(select(Evaluation).where(Evaluation.job_id == eval2)).one()
        kept, lost = s.exec(select(Prediction).where(Prediction.evaluation_id == evaluation.id)).all()
        s.delete(lost)
        row = s.get(Job, eval2)
        row.status, row.pid = "running", 999_999_999  # a process that no longer exists
    out, err = cli(db_path, "run", config, "--stage", "self-train", "--rounds", 2, "--json")
    again = json.loads(out)
    assert f"job {eval2} eval: resuming (running)" in err and "2 questions, 1 already predicted" in err
    assert err.count("already completed with this config (skipped)") == 8
    assert again["jobs"] == doc["jobs"] and again["rounds"] == doc["rounds"][:1] + [again["rounds"][1]]
    with session_scope(engine) as s:
        preds = s.exec(select(Prediction).where(Prediction.evaluation_id == evaluation.id)).all()
    assert sorted(p.question_id for p in preds) == sorted([kept.question_id, lost.question_id])
    assert again["rounds"][1]["accuracy"]["n"] == 2 and len(jobs_of(engine)) == 9


def test_rounds_refuse_what_they_cannot_mean(engine, sqa, db_path, tmp_path, student):
    config = tmp_path / "rounds.toml"
    config.write_text(CONFIG.format(student=student))
    _, err = cli(db_path, "run", config, "--stage", "sample", "--rounds", 2, code=2)
    assert err.strip() == "error: --rounds: only with --stage self-train (or --default), not --stage sample"
    _, err = cli(db_path, "run", config, "--stage", "self-train", "--rounds", 0, code=2)
    assert err.strip() == "error: --rounds: 0 is not a number of rounds (1 or more)"
    _, err = cli(db_path, "run", config, code=2)
    assert err.strip() == "error: run: --stage is required (or --default for the embedded default)"
    assert jobs_of(engine) == {}
