"""Paging stays instant with 200,000 paths in one job: keyset page queries and the screen's page loads."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import statistics
import time

import pytest

from db import app_queries as q
from engine.jobs import create_job
from sert_tui.app import SertApp
from sert_tui.screens.paths import PathsScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    make_dataset,
    question_ids,
    wait_for,
)

N_QUESTIONS, PER_QUESTION = 8_000, 25  # 200,000 paths
RULES = ("pattern", "length", "repetition", "perplexity")


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """A workspace whose sample job holds 200,000 filtered paths (bulk insert with executemany)."""
    from db.session import open_workspace

    db = tmp_path_factory.mktemp("scale") / "workspace.db"
    engine = open_workspace(db)
    dataset = make_dataset(engine, "big", n_train=N_QUESTIONS, n_test=0)
    job = create_job(engine, "sample", {"filters": {"require_correct": False}}, dataset_id=dataset).id
    qids = question_ids(engine, dataset)
    ok = json.dumps({r: {"pass": True, "reason": ""} for r in RULES})
    bad = json.dumps({**json.loads(ok), "perplexity": {"pass": False, "reason": "perplexity 3.1 < 5"}})
    rows = (
        (
            job,
            qid,
            branch,
            sample,
            f"path {n} of question {qn}",
            30 + k,
            0.01 * k,
            8.0,
            ok if k % 3 else bad,
            k % 3 != 0,
            k == 1,
            str(k),
            k % 4 == 0,
            "2026-01-01 00:00:00",
        )
        for qn, qid in enumerate(qids)
        for k, (branch, sample) in enumerate(divmod(i, 5) for i in range(PER_QUESTION))
        for n in (qn * PER_QUESTION + k,)
    )
    con = sqlite3.connect(db)
    start = time.perf_counter()
    con.executemany(
        "INSERT INTO paths (job_id, question_id, source, branch, sample, branch_token, text, tokens, rep2, "
        "perplexity, verdicts, passed, selected, answer, correct, created_at) "
        "VALUES (?, ?, 'self', ?, ?, ' The', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    con.commit()
    con.close()
    print(f"inserted {N_QUESTIONS * PER_QUESTION:,} paths in {time.perf_counter() - start:.1f} s")
    yield {"db": db, "engine": engine, "job": job}
    engine.dispose()


def median_ms(fn, runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def test_page_queries_stay_instant(big):
    job = big["job"]
    with big["engine"].connect() as conn:
        assert q.path_counts(conn, job).total == N_QUESTIONS * PER_QUESTION
        last = q.last_anchor(conn, job, q.PathFilter())
        cases = {
            "first page": (q.PathFilter(), 0),
            "middle page": (q.PathFilter(), 100_000),
            "last page": (q.PathFilter(), last),
            "undecided": (q.PathFilter(decision="undecided"), 150_000),
            "failed a rule": (q.PathFilter(passed=False), 190_000),
            "selected": (q.PathFilter(selected=True), 100_000),
            "correct": (q.PathFilter(correct=True), 120_000),
            "question text": (q.PathFilter(search="Question number 7998."), 0),
            "no match": (q.PathFilter(search="no such words"), 0),
        }
        timings = {}
        for name, (flt, anchor) in cases.items():
            page = q.page_paths(conn, job, flt, anchor)
            assert page.rows or name == "no match", name
            if name == "question text":
                assert {r.question_index for r in page.rows} == {7998} and len(page.rows) == PER_QUESTION
            timings[name] = median_ms(lambda flt=flt, anchor=anchor: q.page_paths(conn, job, flt, anchor))
        timings["previous page"] = median_ms(lambda: q.previous_anchor(conn, job, q.PathFilter(), 150_000))
        timings["counts"] = median_ms(lambda: q.path_counts(conn, job))
    print({k: round(v, 1) for k, v in timings.items()})
    slow = {k: v for k, v in timings.items() if k != "counts" and v >= 100}
    assert not slow, f"pages slower than 100 ms: {slow}"


@pytest.mark.anyio
async def test_screen_pages_through_200k_paths(big):
    from textual import events

    app = SertApp(big["db"], engine=big["engine"])
    async with app.run_test(size=(200, 60)) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True)
        screen = PathsScreen(big["job"])
        start = time.perf_counter()
        await app.push_screen(screen)
        opened = await wait_for(pilot, lambda: screen.loads >= 1, what="first page")
        loads = []
        for key in ["right_square_bracket"] * 5 + ["G", "left_square_bracket", "g", "d", "v", "F"]:
            before = screen.loads
            start = time.perf_counter()
            app._driver.send_message(events.Key(key, None))
            while screen.loads == before:
                await asyncio.sleep(0.001)
            loads.append(1000 * (time.perf_counter() - start))
            await pilot.pause(0.05)
        assert screen.rows[0].id == 1 and len(screen.rows) == 100
    median = statistics.median(loads)
    print(f"open {opened * 1000:.0f} ms; page loads ms: {[round(v) for v in loads]}; median {median:.0f}")
    assert median < 250
