"""The review screen: one question at a time, 1-9 choose its training path, n none, s skip, p back, backspace
undo; what it says a question trains on is what self-training builds (engine.training.datasets.sert_samples)."""

from __future__ import annotations

import random

import pytest
from sqlalchemy import select

from db import curation
from db.app_queries import path_counts
from db.models import Dataset, Job
from db.models import Path as PathRow
from db.paths_repo import set_decision
from db.session import session_scope
from db.vocabulary import CHOSEN, NO_PATH
from engine.training.datasets import sert_samples
from sert_tui.app import SertApp
from sert_tui.screens.paths import PathsScreen
from sert_tui.screens.review import ReviewScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    decisions,
    make_dataset,
    make_filter_job,
    make_sample_job,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio
SIZE = (160, 50)


@pytest.fixture
def workspace(engine, db_path):
    dataset = make_dataset(engine, n_train=6)
    sample = make_sample_job(engine, dataset, n_questions=5)
    filt = make_filter_job(engine, dataset, sample)
    with session_scope(engine) as s:
        rows = s.exec(select(PathRow).where(PathRow.job_id == sample).order_by(PathRow.id)).all()  # type: ignore[call-overload]
        by_q: dict[int, list] = {}
        for r in rows:
            by_q.setdefault(r[0].question_id, []).append(r[0])
        qs = sorted(by_q)
        # decisions made on the paths screen before: an accept off the selection, a rejected selection
        set_decision(s, next(p.id for p in by_q[qs[1]] if not p.selected and p.passed), "accepted")
        set_decision(s, next(p.id for p in by_q[qs[2]] if p.selected), "rejected")
    return {"engine": engine, "db": db_path, "dataset": dataset, "sample": sample, "filter": filt}


def training_ids(engine, sample: int) -> set[int]:
    with session_scope(engine) as s:
        job = s.get(Job, sample)
        dataset = s.get(Dataset, job.dataset_id)  # type: ignore[union-attr]
        return {x.path_id for x in sert_samples(s, job, dataset)}  # type: ignore[arg-type, misc]


def screen_says(screen: ReviewScreen) -> set[int]:
    """The union of what the screen says each question of the queue trains on."""
    out: set[int] = set()
    for item in screen.items:
        view = screen._view(item.question_id)
        assert view is not None
        out.update(screen.trains_on(view))
    return out


async def open_review(app: SertApp, pilot, job_id: int) -> ReviewScreen:
    await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
    screen = ReviewScreen(job_id)
    await app.push_screen(screen)
    await wait_for(pilot, lambda: screen.loaded.is_set(), what="the queue")
    return screen


async def test_choose_none_skip_back_undo_and_the_training_set(workspace):
    engine, sample = workspace["engine"], workspace["sample"]
    app = SertApp(workspace["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(app, pilot, workspace["filter"])
        assert screen.paths_job == sample and len(screen.items) == 5
        q = [item.question_id for item in screen.items]
        text = screen_text(app)
        assert "question 1/5" in text and "0 done · 5 left" in text
        assert "Gold answer: 3" in text and "What is 2 plus 1?" in text
        first = screen._view(q[0])
        assert first is not None
        survivors = first.survivors
        assert " 1 " in text and f"(id {survivors[0].id})" in text

        await pilot.press("2")  # question 1: its second survivor
        assert screen.position == 1
        await pilot.press("n")  # question 2: none is good enough
        await pilot.press("s")  # question 3: skipped
        await pilot.press("1")  # question 4: the first survivor
        assert screen.counts() == (3, 2) and "3 done · 2 left" in screen_text(app)
        await pilot.press("p", "p", "p")  # back past the end of question 4, 3, to question 2
        assert screen.position == 1
        await pilot.press("1")  # question 2 changes its mind: path 1 instead of none
        assert screen.position == 2
        await pilot.press("backspace")  # undoes that: question 2 is none again, and on screen
        assert screen.position == 1 and screen.done[q[1]] == (NO_PATH, None)
        app.decision_writer.flush()
        await pilot.pause(0.05)

        got = decisions(engine, sample)
        assert got[survivors[1].id] == CHOSEN
        second = screen._view(q[1])
        assert second is not None and all(got[p.id] == NO_PATH for p in second.paths)
        fourth = screen._view(q[3])
        assert fourth is not None and got[fourth.survivors[0].id] == CHOSEN
        third = screen._view(q[2])
        assert third is not None and not any(got[p.id] in (CHOSEN, NO_PATH) for p in third.paths)

        expected = screen_says(screen)
        assert training_ids(engine, sample) == expected
        assert survivors[1].id in expected and not any(p.id in expected for p in second.paths)
        with engine.connect() as conn:
            assert path_counts(conn, sample).training_set == len(expected)

        # the paths screen shows the choices and counts the same training set
        await pilot.press("escape")
        paths = PathsScreen(sample)
        await app.push_screen(paths)
        await wait_for(pilot, lambda: paths.loaded.is_set() and paths.loads >= 1, what="paths")
        await wait_for(pilot, lambda: paths.counts.training_set == len(expected), what="paths counts")
        assert f"Training set (self-train): {len(expected)}" in screen_text(app)


async def test_the_order_and_all_paths_keys(workspace):
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(app, pilot, workspace["sample"])
        view = screen._view(screen.items[0].question_id)
        assert view is not None
        assert len(screen.visible(view)) == len(view.survivors) < len(view.paths)
        await pilot.press("a")
        assert len(screen.visible(view)) == len(view.paths) == 25
        assert "showing every path" in screen_text(app)
        before = [i.question_id for i in screen.items]
        await pilot.press("o")
        await wait_for(pilot, lambda: screen.order == "disagree" and screen.loaded.is_set())
        await pilot.pause(0.1)
        assert sorted(i.question_id for i in screen.items) == sorted(before)
        assert "survivors disagree" in screen_text(app)


def test_curation_rule_and_changes_in_sql_and_memory(engine):
    dataset = make_dataset(engine, n_train=3)
    sample = make_sample_job(engine, dataset, n_questions=3)
    with engine.connect() as conn:
        views = [curation.question_view(conn, sample, item.question_id) for item in curation.queue(conn, sample)]
    a, b, _c = views
    assert a is not None and b is not None
    pick = a.survivors[-1].id
    changes = curation.choice_changes([(p.id, p.decision) for p in a.paths], pick)
    assert changes == [(pick, CHOSEN)]
    now = {p.id: p.decision for p in a.paths} | dict(changes)
    # choosing another path clears the first one in the same batch; none marks every path
    other = a.survivors[0].id
    assert sorted(curation.choice_changes(list(now.items()), other)) == sorted([(pick, None), (other, CHOSEN)])
    marks = curation.choice_changes(list(now.items()), None)
    assert len(marks) == 25 and {d for _p, d in marks} == {NO_PATH}
    with session_scope(engine) as s:
        for pid, d in changes:
            set_decision(s, pid, d)
        for p in b.paths:
            set_decision(s, p.id, NO_PATH)
    ids = training_ids(engine, sample)
    assert pick in ids and not ({p.id for p in a.paths} - {pick}) & ids and not {p.id for p in b.paths} & ids
    with engine.connect() as conn:
        assert path_counts(conn, sample).training_set == len(ids) == 2  # a: chosen, b: none, c: the rule's pick
        assert curation.done_questions(conn, sample) == {a.question_id: (CHOSEN, pick), b.question_id: (NO_PATH, None)}


KEYS = ["1", "2", "3", "5", "9", "n", "s", "p", "backspace", "a"]


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
async def test_random_key_sequences_train_on_what_the_screen_says(workspace, seed):
    engine, sample = workspace["engine"], workspace["sample"]
    app = SertApp(workspace["db"], engine=engine)
    rng = random.Random(seed)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_review(app, pilot, workspace["sample"])
        for key in rng.choices(KEYS, k=50):
            await pilot.press(key)
        app.decision_writer.flush()
        await pilot.pause(0.05)
        expected = screen_says(screen)
        assert training_ids(engine, sample) == expected
        with engine.connect() as conn:
            assert path_counts(conn, sample).training_set == len(expected)
            assert curation.done_questions(conn, sample) == screen.done
