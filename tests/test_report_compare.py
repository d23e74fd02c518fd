"""``report runs`` intervals and majority rows, ``report compare``, and Table II with two students.

Evaluations and predictions are rows in a real workspace with the real StrategyQA questions of ../shared/data;
the outcomes are chosen so that every figure can be counted by hand.
"""

from __future__ import annotations

import json
import math

import pytest
from sqlmodel import select

from db.models import Evaluation, Prediction, Question
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


def _evaluate(engine, dataset_id, label, correct: list[bool], student="default") -> int:
    job = create_job(engine, "eval", {"student": {"model": student}}, dataset_id=dataset_id)
    questions = _questions(engine, dataset_id)
    with session_scope(engine) as s:
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
