"""Workspace builders and Pilot helpers shared by the app tests (no tests here).

Rows go through the repository functions the engine itself uses: ``save_dataset`` for questions,
``create_job`` for jobs, ``write_question_paths`` for paths (with the verdicts, passed and selected values the
filter stage writes), ``JobContext.metrics``/``log``/``progress`` for training runs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from db.models import Path as PathRow
from db.records import DatasetSpec, QuestionRecord
from db.session import session_scope

RULES = ("pattern", "length", "repetition", "perplexity")


def make_dataset(engine, name: str = "arith", n_train: int = 4, n_test: int = 3) -> int:
    from db.queries import save_dataset

    records = [
        QuestionRecord(
            split="train" if i < n_train else "test",
            index=i,
            position=i if i < n_train else i - n_train,
            text=f"What is {i + 2} plus {3 * i + 1}? Question number {i}.",
            answer=str(i + 2 + 3 * i + 1),
        )
        for i in range(n_train + n_test)
    ]
    spec = DatasetSpec(name, "basic_arithmetic", "number", "generated", "test", records)
    with session_scope(engine) as s:
        return save_dataset(s, spec).id  # type: ignore[return-value]


def question_ids(engine, dataset_id: int, split: str = "train") -> list[int]:
    from db.queries import split_questions

    with session_scope(engine) as s:
        return [q.id for q in split_questions(s, dataset_id, split)]  # type: ignore[misc]


def path_rows(question_number: int, per_question: int = 25, filtered: bool = True) -> list[dict[str, Any]]:
    """25 paths of one question with a deterministic mix of verdicts (as the filter stage stores them)."""
    rows = []
    for k in range(per_question):
        branch, sample = divmod(k, 5)
        fail = {
            "pattern": k % 7 == 0,
            "length": k % 5 == 4,
            "repetition": k % 6 == 5,
            "perplexity": k % 11 == 3,
        }
        tokens = 12 if fail["length"] else 30 + k
        rep2 = 0.3 if fail["repetition"] else round(0.01 * (k % 9), 3)
        row: dict[str, Any] = {
            "branch": branch,
            "sample": sample,
            "branch_token": [" The", " We", " First", " Let", " To"][branch],
            "text": f" The sum needs care: path {k} of question {question_number}.\nSo the answer is {k}.",
            "tokens": tokens,
            "rep2": rep2,
            "perplexity": 3.0 if fail["perplexity"] else 7.0 + k,
            "mean_logprob": -1.5,
            "answer": str(k),
            "correct": k % 4 == 0,
        }
        if filtered:
            row["verdicts"] = {
                rule: {"pass": not fail[rule], "reason": f"{rule} failed" if fail[rule] else ""} for rule in RULES
            }
            row["passed"] = not any(fail.values())
        rows.append(row)
    if filtered:
        survivors = [r for r in rows if r["passed"]]
        if survivors:
            min(survivors, key=lambda r: r["rep2"])["selected"] = True
    return rows


def make_sample_job(
    engine, dataset_id: int, n_questions: int = 3, per_question: int = 25, filtered: bool = True, **job: Any
) -> int:
    """A sample job with its paths written per question, as the sample + filter stages do."""
    from db.paths_repo import write_question_paths
    from engine.jobs import create_job

    config = {"name": "test", "filters": {"require_correct": False}}
    sample = create_job(engine, "sample", config, dataset_id=dataset_id, label=job.get("label", "test"))
    qids = question_ids(engine, dataset_id)[:n_questions]
    for number, qid in enumerate(qids):
        with session_scope(engine) as s:
            write_question_paths(s, sample.id, qid, path_rows(number, per_question, filtered))  # type: ignore[arg-type]
    with session_scope(engine) as s:
        from db.models import Job

        row = s.get(Job, sample.id)
        assert row is not None
        row.status = job.get("status", "completed")
        row.progress_done = row.progress_total = len(qids)
    return sample.id  # type: ignore[return-value]


def make_filter_job(engine, dataset_id: int, sample_id: int) -> int:
    """A filter job on a sample job: it owns no paths; its own verdicts (``filter_verdicts``) are those the sample
    job's path rows carry, as the filter stage writes both."""
    from engine.jobs import create_job

    job_id = create_job(
        engine, "filter", {"filters": {"require_correct": False}}, dataset_id=dataset_id, parent_id=sample_id
    ).id
    assert job_id is not None
    copy_verdicts(engine, sample_id, job_id)
    return job_id


def copy_verdicts(engine, sample_id: int, filter_job_id: int) -> None:
    """Store what the path rows of ``sample_id`` carry as the own verdicts of ``filter_job_id``."""
    from sqlmodel import select

    from db import filter_verdicts

    with session_scope(engine) as s:
        rows = s.exec(
            select(PathRow.id, PathRow.verdicts, PathRow.passed, PathRow.selected).where(PathRow.job_id == sample_id)
        ).all()
        filter_verdicts.write(
            s,
            filter_job_id,
            [
                {"path_id": i, "verdicts": v, "passed": bool(sel) if p is None else p, "selected": sel}
                for i, v, p, sel in rows
                if p is not None or sel  # a path written selected without verdicts (unit tests): selected
            ],
        )


def decisions(engine, job_id: int) -> dict[int, str | None]:
    from sqlmodel import select

    with session_scope(engine) as s:
        return dict(s.exec(select(PathRow.id, PathRow.decision).where(PathRow.job_id == job_id)).all())  # type: ignore[arg-type]


async def wait_for(pilot, condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> float:
    """Let the app run until ``condition()`` holds; returns the seconds it took."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.02)
    return time.perf_counter() - start


async def settle(pilot, seconds: float = 0.1) -> None:
    await pilot.pause(seconds)
    await asyncio.sleep(0)


def cell_text(table, path_id: int | str, column: str) -> str:
    """The text a PathTable shows in one cell of the row of ``path_id``."""
    index = next(i for i, r in enumerate(table.rows) if r.id == int(path_id))
    return table.cell_text(index, column)


def screen_text(app) -> str:
    """Everything the current screen shows, as plain text (what a person reads)."""
    from textual.widgets import DataTable, Static

    from sert_tui.widgets.path_table import PathTable

    parts = []
    for widget in app.screen.query("*"):
        if isinstance(widget, PathTable):
            parts.extend(widget.plain_lines())
        elif isinstance(widget, Static):
            content = widget.render()
            parts.append(getattr(content, "plain", str(content)))
        elif isinstance(widget, DataTable):
            for i in range(widget.row_count):
                parts.append(" | ".join(getattr(c, "plain", str(c)) for c in widget.get_row_at(i)))
    return "\n".join(parts)


@pytest.fixture
def anyio_backend() -> str:
    """The app tests are async (Textual's Pilot); anyio's pytest plugin runs them on asyncio."""
    return "asyncio"


def screen_dump(app) -> str:
    """The screen as a person sees it, as plain text lines (for debugging and layout checks)."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(seg.text for seg in strip) for strip in strips)
