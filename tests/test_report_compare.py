"""``report runs`` intervals and majority rows, ``report compare``, Table II with two students, and reports that
use finished work only.

Evaluations and predictions are rows in a real workspace with the real StrategyQA questions of ../shared/data;
the outcomes are chosen so that every figure can be counted by hand.
"""

from __future__ import annotations

import json
import math

import pytest
from sqlmodel import select

from db.models import Evaluation, Job, Prediction, Question
from db.session import session_scope
from engine.evaluation.stats import mcnemar_exact, wilson_interval
from engine.jobs import create_job
from sert_tui.cli import main

N = 40


def _questions(engine, dataset_id: int) -> list[tuple[int, str]]:
    with session_scope(engine) as s:
        rows = s.exec(
            select(Question.id, Question.answer)
            .where(Question.dataset_id == dataset_id, Question.split == "test")
            .order_by(Question.position)
            .limit(N)
        ).all()
    return [(q, a) for q, a in rows]


def _evaluate(engine, dataset_id, label, correct: list[bool], student="default", status="completed") -> int:
    """An eval job in ``status`` (completed: the eval stage finished it) with its evaluation and predictions."""
    job = create_job(engine, "eval", {"student": {"model": student}}, dataset_id=dataset_id)
    questions = _questions(engine, dataset_id)
    with session_scope(engine) as s:
        s.get(Job, job.id).status = status  # type: ignore[union-attr]
        ev = Evaluation(
            job_id=job.id,
            model_ref=student,
            label=label,
            dataset_id=dataset_id,
            split="test",
            n=len(correct),
            acc=sum(correct) / len(correct),
            fmt=0.5,
            len=10.0,
            rep=0.2,
        )
        s.add(ev)
        s.flush()
        for (qid, gold), ok in zip(questions, correct, strict=False):
            s.add(Prediction(evaluation_id=ev.id, question_id=qid, output=f"{label} says", answer=gold, correct=ok))
        return ev.id


@pytest.fixture
def runs(engine, sqa):
    # SERT right on the first 30, Finetune on the first 20 and the last 4: discordant 10 (SERT) vs 4 (Finetune)
    sert = [i < 30 for i in range(N)]
    finetune = [i < 20 or i >= N - 4 for i in range(N)]
    zero = [i % 4 == 0 for i in range(N)]
    ids = {
        "SERT": _evaluate(engine, sqa.id, "SERT", sert),
        "Finetune": _evaluate(engine, sqa.id, "Finetune", finetune),
        "zero-shot": _evaluate(engine, sqa.id, "zero-shot", zero),
    }
    return ids, {"SERT": sert, "Finetune": finetune, "zero-shot": zero}


def test_runs_json_has_intervals_and_the_majority_row(db_path, engine, sqa, runs, capsys):
    assert main(["--db", str(db_path), "report", "runs", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert isinstance(rows, list) and [r["label"] for r in rows] == ["SERT", "Finetune", "zero-shot", "majority"]
    sert = rows[0]
    assert sert["acc"] == pytest.approx(0.75)
    assert sert["acc_ci"] == pytest.approx(list(wilson_interval(30, N)))
    assert sert["fmt_ci"] == pytest.approx(list(wilson_interval(20, N)))
    golds = [a for _q, a in _questions(engine, sqa.id)]
    top = max(set(golds), key=golds.count)
    maj = rows[-1]
    assert (maj["dataset"], maj["split"], maj["n"]) == ("sqa", "test", N)
    assert maj["acc"] == pytest.approx(golds.count(top) / N) and maj["answer"] == top
    assert maj["acc_ci"] == pytest.approx(list(wilson_interval(golds.count(top), N)))

    assert main(["--db", str(db_path), "report", "runs"]) == 0
    out = capsys.readouterr().out
    assert "75.0 [" in out and "majority" in out


def test_compare_counts_discordant_pairs_by_hand(db_path, runs, capsys):
    assert main(["--db", str(db_path), "report", "compare", "--a", "SERT", "--b", "Finetune", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert {"dataset", "split", "a", "b", "n", "diff", "diff_ci", "p_value"} <= set(row)
    assert (row["a"], row["b"], row["n"]) == ("SERT", "Finetune", N)
    assert row["diff"] == pytest.approx(30 / N - 24 / N)
    assert (row["a_only"], row["b_only"]) == (10, 4)
    assert row["p_value"] == pytest.approx(mcnemar_exact(10, 4))
    assert row["p_value"] == pytest.approx(2 * sum(math.comb(14, i) for i in range(5)) / 2**14)
    lo, hi = row["diff_ci"]
    assert lo < row["diff"] < hi


def test_compare_default_pairs_and_bad_labels(db_path, runs, capsys):
    assert main(["--db", str(db_path), "report", "compare", "--json"]) == 0
    pairs = [(r["a"], r["b"]) for r in json.loads(capsys.readouterr().out)]
    assert pairs == [("SERT", "Finetune"), ("SERT", "zero-shot")]  # RD and SERT+RD were not evaluated
    assert main(["--db", str(db_path), "report", "compare", "--a", "SERT", "--b", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --b 'nope'") and len(err.strip().splitlines()) == 1
    assert main(["--db", str(db_path), "report", "compare", "--a", "SERT"]) == 2


def test_two_students_on_one_dataset_are_two_table_lines(db_path, engine, sqa, capsys):
    from engine.evaluation.report import evaluations, table_two

    _evaluate(engine, sqa.id, "SERT", [True] * N, student="default")
    _evaluate(engine, sqa.id, "SERT", [False] * N, student="HuggingFaceTB/SmolLM2-360M-Instruct")
    with engine.connect() as conn:
        _labels, lines = table_two(evaluations(conn))
    assert sorted(line.student for line in lines) == ["HuggingFaceTB/SmolLM2-360M-Instruct", "default"]
    assert main(["--db", str(db_path), "report", "runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("default ") and "100.0" in line for line in out)
    assert any(line.startswith("HuggingFaceTB/SmolLM2-360M-Instruct") and " 0.0 [" in line for line in out)


def test_reports_use_completed_eval_jobs_only(db_path, engine, sqa, runs, capsys):
    """A newer failed (or running) evaluation never takes the place of the completed one: it is a note."""
    ids, _outcomes = runs
    failed = _evaluate(engine, sqa.id, "SERT", [False] * N, status="failed")
    running = _evaluate(engine, sqa.id, "Finetune", [True] * N, status="running")
    alone = _evaluate(engine, sqa.id, "RD", [True] * N, status="cancelled")  # no completed RD at all
    with session_scope(engine) as s:
        job_of = {e: s.get(Evaluation, e).job_id for e in (failed, running, alone)}  # type: ignore[union-attr]

    assert main(["--db", str(db_path), "report", "runs", "--json"]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)  # still one list of the completed evaluations and the majority row
    assert [(r["label"], r["evaluation"]) for r in rows] == [
        ("SERT", ids["SERT"]),
        ("Finetune", ids["Finetune"]),
        ("zero-shot", ids["zero-shot"]),
        ("majority", None),
    ]
    assert f"note: evaluation {failed} (job {job_of[failed]}, failed): SERT on sqa/test is newer than the one " in (
        captured.err
    )
    assert f"(evaluation {ids['SERT']})" in captured.err and f"evaluation {running} (job" in captured.err

    assert main(["--db", str(db_path), "report", "runs"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("default"))
    assert "75.0 [" in line and "60.0 [" in line and " RD" not in out.splitlines()[1]  # SERT 30/40, Finetune 24/40
    assert (
        f"note: evaluation {failed} (job {job_of[failed]}, failed): SERT on sqa/test is newer than the one shown" in out
    )
    assert f"note: evaluation {running} (job {job_of[running]}, running): Finetune on sqa/test is newer" in out
    assert f"note: evaluation {alone} (job {job_of[alone]}, cancelled): RD on sqa/test is not shown" in out
    assert not any(line.startswith(f"{failed} ") for line in out.splitlines())  # not in "All evaluations"

    assert main(["--db", str(db_path), "report", "compare", "--a", "SERT", "--b", "Finetune", "--json"]) == 0
    captured = capsys.readouterr()
    (row,) = json.loads(captured.out)
    assert (row["eval_a"], row["eval_b"], row["a_only"], row["b_only"]) == (ids["SERT"], ids["Finetune"], 10, 4)
    assert row["p_value"] == mcnemar_exact(10, 4) and row["test"] == "mcnemar"
    assert f"evaluation {failed} (job" in captured.err and f"evaluation {alone} (job" not in captured.err

    assert main(["--db", str(db_path), "report", "compare", "--a", "SERT", "--b", "Finetune"]) == 0
    out = capsys.readouterr().out
    assert "sign-flip permutation on d_q (exact McNemar with one seed)" in out
    assert f"{mcnemar_exact(10, 4):.3g}" in out and "10 / 4" in out
    assert f"note: evaluation {failed} (job {job_of[failed]}, failed)" in out
    # A label evaluated only by an unfinished job is not a label to compare.
    assert main(["--db", str(db_path), "report", "compare", "--a", "RD", "--b", "SERT"]) == 2
    assert "no evaluation of a completed eval job has that label" in capsys.readouterr().err


def test_a_completed_evaluation_newer_than_a_failed_one_needs_no_note(db_path, engine, sqa, capsys):
    from engine.evaluation.report import all_evaluations, unfinished

    _evaluate(engine, sqa.id, "SERT", [False] * N, status="failed")
    newer = _evaluate(engine, sqa.id, "SERT", [True] * N)
    with engine.connect() as conn:
        done, notes = unfinished(all_evaluations(conn))
    assert [r.id for r in done] == [newer] and notes == []
    assert main(["--db", str(db_path), "report", "runs"]) == 0
    assert "note:" not in capsys.readouterr().out
