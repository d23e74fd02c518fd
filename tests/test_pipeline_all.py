"""The whole chain (`run --stage all`) on the real bundled student at tiny size: sample → filter → self-train →
(recorded teacher rationales) → distill → eval, with the zero-shot, Finetune and RD baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from db.models import Checkpoint, Evaluation, Job, Metric, Prediction
from db.session import session_scope
from engine.config import config_from_dict

pytestmark = [pytest.mark.model, pytest.mark.slow]

SHARED = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "reasoning-teacher"
CONFIG = {
    "name": "chain",
    "data": {"dataset": "sqa", "train_limit": 3, "test_limit": 3},
    "sampling": {"first_tokens": 3, "per_branch": 2, "max_new_tokens": 24, "batch_size": 16},
    # Loose filters so that every question keeps a path at this tiny size (the paper's values are defaults).
    "filters": {"min_tokens": 1, "max_rep2": 1.0, "min_perplexity": 0.0},
    "train": {"max_steps": 2, "batch_size": 2, "max_length": 96, "save_steps": 100},
    "eval": {"max_new_tokens": 12, "batch_size": 8},
}


def test_stage_all_runs_the_chain_and_the_report_shows_every_label(engine, sqa, db_path, capsys):
    from engine.pipeline import run_stage
    from engine.teacher.recorded import import_recorded
    from sert_tui.cli import main

    import_recorded(engine, "sqa", SHARED / "teacher-text-davinci-002" / "D_strategy_qa.json")
    config = config_from_dict(CONFIG)
    lines: list[str] = []
    jobs = run_stage(engine, config, "all", lines.append)

    kinds = [j.kind for j in jobs]
    assert kinds[:3] == ["sample", "filter", "self-train"]
    assert sorted(kinds[3:]) == sorted(["distill", "distill", "finetune", *["eval"] * 5])
    assert all(j.status == "completed" for j in jobs), [(j.id, j.kind, j.status, j.error) for j in jobs]
    assert any("distillation uses the teacher rationales already in the workspace" in line for line in lines)

    with session_scope(engine) as s:
        by_id = {j.id: j for j in s.exec(select(Job)).all()}
        training = [j for j in by_id.values() if j.kind in ("self-train", "distill", "finetune")]
        labels = {j.label: j for j in training}
        assert set(labels) == {"SERT", "RD", "SERT+RD", "Finetune"}
        # lineage: SERT ← filter, SERT+RD ← SERT, RD ← teacher, Finetune ← nothing
        assert by_id[labels["SERT"].parent_id].kind == "filter"
        assert labels["SERT+RD"].parent_id == labels["SERT"].id
        assert by_id[labels["RD"].parent_id].kind == "teacher"
        assert labels["Finetune"].parent_id is None
        assert labels["SERT+RD"].summary["start_model"] == labels["SERT"].summary["final_checkpoint"]

        for job in training:
            steps = job.summary["steps"]  # max_steps = 2, fewer when the set has at most one batch
            assert steps == min(2, -(-job.summary["samples"] // 2))
            rows = [(m.step, m.name) for m in s.exec(select(Metric).where(Metric.job_id == job.id)).all()]
            names = ("loss", "lr", "grad_norm", "tokens_per_s", "epoch")
            assert sorted(rows) == sorted((step, n) for step in range(1, steps + 1) for n in names)
            (ckpt,) = s.exec(select(Checkpoint).where(Checkpoint.job_id == job.id)).all()
            assert ckpt.is_final and ckpt.step == steps
            folder = Path(ckpt.path)
            assert folder.parent == db_path.parent / "checkpoints" / f"job-{job.id}"
            assert {"model.safetensors", "config.json", "tokenizer.json", "sert_config.json"} <= {
                p.name for p in folder.iterdir()
            }
            assert json.loads((folder / "sert_config.json").read_text())["label"] == job.label

        evaluations = s.exec(select(Evaluation)).all()
        assert sorted(e.label for e in evaluations) == sorted(["zero-shot", "SERT", "RD", "SERT+RD", "Finetune"])
        for e in evaluations:
            job = by_id[e.job_id]
            assert job.kind == "eval" and job.label == e.label
            assert (job.parent_id is None) == (e.label == "zero-shot")
            assert e.n == 3 and 0.0 <= e.acc <= 1.0 and 0.0 <= e.fmt <= 1.0 and e.len >= 0 and 0 <= e.rep <= 1
            preds = s.exec(select(Prediction).where(Prediction.evaluation_id == e.id)).all()
            assert len(preds) == 3 and all(p.tokens <= 12 for p in preds)
            assert e.acc == sum(p.correct for p in preds) / 3

    assert main(["--db", str(db_path), "report", "runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["label"] for r in rows) == sorted(["zero-shot", "SERT", "RD", "SERT+RD", "Finetune", "majority"])
    assert all(r["dataset"] == "sqa" and r["split"] == "test" and r["n"] == 3 for r in rows)
    assert next(r for r in rows if r["label"] == "zero-shot")["checkpoint"] == "default"
    assert next(r for r in rows if r["label"] == "SERT")["checkpoint"] == labels["SERT"].summary["final_checkpoint"]
    assert main(["--db", str(db_path), "report", "runs"]) == 0
    header = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("student"))
    assert header.split() == [
        "student",
        "dataset",
        "split",
        "Finetune",
        "SERT",
        "RD",
        "SERT+RD",
        "zero-shot",
        "majority",
    ]

    # A second run skips everything: no new job.
    again = run_stage(engine, config, "all", lines.append)
    assert {j.id for j in again} == {j.id for j in jobs}
    with session_scope(engine) as s:
        assert len(s.exec(select(Job)).all()) == len(by_id)
