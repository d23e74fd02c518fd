"""Results: the Table II comparison, the evaluations with judge scores, predictions side by side."""

from __future__ import annotations

import pytest

from db.models import Evaluation, Job, Prediction
from db.session import session_scope
from engine.evaluation.stats import mcnemar_exact
from engine.jobs import create_job
from sert_tui.app import SertApp
from sert_tui.screens.home import HomeScreen
from sert_tui.screens.results import PredictionsScreen, ResultsScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    make_dataset,
    question_ids,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio
SIZE = (200, 50)


def evaluation(
    engine,
    dataset: int,
    label: str,
    correct: list[bool],
    scores: dict | None = None,
    student: str | None = None,
    status: str = "completed",
) -> int:
    """An eval job in ``status`` with its Evaluation row and one Prediction per test question, as the eval stage
    writes them."""
    config = {"student": {"model": student}} if student else {}
    job = create_job(engine, "eval", config, dataset_id=dataset, label=label).id
    qids = question_ids(engine, dataset, "test")
    with session_scope(engine) as s:
        s.get(Job, job).status = status  # type: ignore[union-attr]
        ev = Evaluation(
            job_id=job,
            label=label,
            model_ref="default" if label == "zero-shot" else f"/ckpt/{label}",
            dataset_id=dataset,
            split="test",
            n=len(qids),
            acc=sum(correct) / len(correct),
            fmt=0.75,
            len=41.5,
            rep=0.123,
            scores=scores or {},
        )
        s.add(ev)
        s.flush()
        for qid, ok in zip(qids, correct, strict=True):
            s.add(
                Prediction(
                    evaluation_id=ev.id,
                    question_id=qid,
                    output=f"{label} reasons about question {qid}. So the answer is {qid if ok else -1}.",
                    answer=str(qid if ok else -1),
                    correct=ok,
                    well_formed=True,
                    tokens=12,
                )
            )
        return ev.id  # type: ignore[return-value]


async def test_table_two_and_predictions_side_by_side(engine, db_path):
    dataset = make_dataset(engine, n_train=2, n_test=4)
    zero = evaluation(engine, dataset, "zero-shot", [False, False, True, False])
    evaluation(engine, dataset, "Finetune", [True, False, True, False])
    sert = evaluation(engine, dataset, "SERT", [True, True, True, False], {"coherence": 7.5, "completeness": 6.0})
    evaluation(engine, dataset, "RD", [True, False, False, False])
    evaluation(engine, dataset, "SERT+RD", [True, True, True, True])
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.loaded)
        results = app.screen
        text = screen_text(app)
        # Table II: one line per student/dataset/split, the paper's column order, accuracy % [95% Wilson], majority
        line = "arith / test | 50.0 [15.0, 85.0] n=4 | 75.0 [30.1, 95.4] n=4 | 25.0 [4.6, 69.9] n=4 | "
        assert line + "100.0 [51.0, 100.0] n=4 | 25.0 [4.6, 69.9] n=4 | 25.0 [4.6, 69.9] n=4" in text
        labels = [str(c.label) for c in results.query_one("#table-two").columns.values()]
        assert labels == ["student", "dataset / split", "Finetune", "SERT", "RD", "SERT+RD", "zero-shot", "majority"]
        plot = results.query_one("#acc-plot").plt.build()  # one interval bar per label, the majority line
        assert all(label in plot for label in ("Finetune", "SERT+RD", "zero-shot")) and "●" in plot
        # Every evaluation with Acc/Fmt/Len/Rep and the judge scores where present.
        assert f"| {sert} |" in text and "| SERT | /ckpt/SERT |" in text
        row = next(line for line in text.splitlines() if line.startswith(f" | {sert} |"))
        assert row.endswith("| 75.0 [30.1, 95.4] | 75.0 [30.1, 95.4] | 41.5 | 0.123 | 7.50 | 6.00")  # judge scores
        other = next(line for line in text.splitlines() if line.startswith(f" | {zero} |"))
        assert other.endswith("| 25.0 [4.6, 69.9] | 75.0 [30.1, 95.4] | 41.5 | 0.123 | – | –")  # no judge scores
        # Mark zero-shot as A, open SERT beside it.
        table = results.query_one("#evals")
        table.move_cursor(row=results._index(zero))
        await pilot.press("m")
        table.move_cursor(row=results._index(sert))
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, PredictionsScreen) and app.screen.loaded)
        preds = app.screen
        assert len(preds.shown) == 4
        text = screen_text(app)
        assert f"A: eval {zero} zero-shot" in text and f"B: eval {sert} SERT" in text
        assert "zero-shot reasons about question" in text and "SERT reasons about question" in text
        # Their paired comparison: one evaluation each, so the p-value is exact McNemar on 0 vs 2 discordant.
        c = preds.comparison
        assert (c.n, c.a_only, c.b_only, c.diff, c.p_value) == (4, 0, 2, -0.5, mcnemar_exact(0, 2))
        assert "A - B: -50.0 pts [" in text and "p = 0.5: sign-flip permutation on d_q (exact McNemar" in text
        await pilot.press("d")  # only where the two runs differ
        assert [p.question_index for p in preds.shown] == [2, 3]
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen))
        # One evaluation alone (no mark on another row): its predictions only.
        await pilot.press("m")  # the cursor is on SERT: SERT becomes the marked one
        assert results.marked == sert
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PredictionsScreen) and app.screen.loaded)
        assert app.screen.b is None and len(app.screen.shown) == 4


async def test_eval_job_opens_results_on_its_evaluation(engine, db_path):
    dataset = make_dataset(engine, n_train=2, n_test=2)
    first = evaluation(engine, dataset, "zero-shot", [True, False])
    second = evaluation(engine, dataset, "SERT", [True, True])
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        home = app.screen
        with session_scope(engine) as s:
            job_of_first = s.get(Evaluation, first).job_id  # type: ignore[union-attr]
        home.select_job(job_of_first)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.loaded)
        assert app.screen.current().id == first
        assert second in [r.id for r in app.screen.rows]
        empty = ResultsScreen()
        assert empty.rows == []


async def test_two_students_on_one_dataset_are_two_table_lines(engine, db_path, capsys):
    """The app and `report runs` pivot with the same function: one line per (student, dataset, split)."""
    from sert_tui.cli import main

    dataset = make_dataset(engine, n_train=2, n_test=4)
    evaluation(engine, dataset, "SERT", [True, True, True, False], student="default")
    evaluation(engine, dataset, "SERT", [False, False, False, True], student="HuggingFaceTB/SmolLM2-360M-Instruct")
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.loaded)
        text = screen_text(app)
    lines = [line for line in text.splitlines() if "arith / test" in line]
    assert len(lines) == 2, lines
    assert any(line.startswith("default ") and "75.0 [30.1, 95.4] n=4" in line for line in lines), lines
    assert any("SmolLM2-360M-Instruct" in line and "25.0 [4.6, 69.9] n=4" in line for line in lines), lines
    assert main(["--db", str(db_path), "report", "runs"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith(("default ", "HuggingFaceTB/SmolLM2-360M-Instruct ")) for line in out) >= 2


async def test_a_newer_failed_evaluation_is_a_note_not_the_table_cell(engine, db_path):
    """Finished work only: the completed SERT evaluation keeps its Table II cell and its row; the newer failed one
    (and a running one with nothing completed) are notes under the tables."""
    dataset = make_dataset(engine, n_train=2, n_test=4)
    done = evaluation(engine, dataset, "SERT", [True, True, True, False])
    failed = evaluation(engine, dataset, "SERT", [False, False, False, False], status="failed")
    running = evaluation(engine, dataset, "RD", [True, False, False, False], status="running")
    with session_scope(engine) as s:
        jobs = {e: s.get(Evaluation, e).job_id for e in (failed, running)}  # type: ignore[union-attr]
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen) and app.screen.loaded)
        results = app.screen
        assert [r.id for r in results.rows] == [done]
        labels = [str(c.label) for c in results.query_one("#table-two").columns.values()]
        assert labels == ["student", "dataset / split", "SERT", "majority"]
        text = screen_text(app)
        assert "75.0 [30.1, 95.4] n=4" in text
        assert f"note: evaluation {failed} (job {jobs[failed]}, failed): SERT on arith/test is newer than the one" in (
            text
        )
        assert f"note: evaluation {running} (job {jobs[running]}, running): RD on arith/test is not shown" in text
