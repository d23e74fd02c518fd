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
        filter_job = s.exec(  # the sample job's filter job (the fixture's): training reads its own verdicts
            select(Job.id).where(Job.parent_id == sample, Job.kind == "filter").order_by(Job.id.desc())  # type: ignore[union-attr]
        ).first()
        assert filter_job is not None
        filter_job = int(filter_job[0]) if not isinstance(filter_job, int) else filter_job
        return {x.path_id for x in sert_samples(s, job, dataset, filter_job)}  # type: ignore[arg-type, misc]


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
        survivors = curation.in_review_order(first.survivors)  # as numbered: the rule's pick first
        assert survivors[0].selected and screen.shown(first) == survivors[:9]
        assert " 1 rule's pick" in text and f"(id {survivors[0].id})" in text

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
        assert fourth is not None and got[curation.in_review_order(fourth.survivors)[0].id] == CHOSEN
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
        assert "every path (a) · 1–9 of 25" in screen_text(app)
        await pilot.press("right_square_bracket", "right_square_bracket")
        assert screen.shown(view) == screen.visible(view)[18:] and "19–25 of 25" in screen_text(app)
        await pilot.press("7")  # the last path of the question, numbered 7 on its third nine
        assert screen.done[view.question_id] == (CHOSEN, screen.visible(view)[24].id) and screen.position == 1
        before = [i.question_id for i in screen.items]
        await pilot.press("o")
        await wait_for(pilot, lambda: screen.order == "disagree" and screen.loaded.is_set())
        await pilot.pause(0.1)
        assert sorted(i.question_id for i in screen.items) == sorted(before)
        assert "survivors disagree" in screen_text(app)


def test_curation_rule_and_changes_in_sql_and_memory(engine):
    dataset = make_dataset(engine, n_train=3)
    sample = make_sample_job(engine, dataset, n_questions=3)
    make_filter_job(engine, dataset, sample)  # training reads a filter job's own selection
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


KEYS = ["1", "2", "3", "5", "9", "n", "s", "p", "backspace", "a", "right_square_bracket", "left_square_bracket"]


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


def test_a_burst_of_choices_survives_a_hang_up(tmp_path):
    """The real app in a pty, on the review screen, while another connection holds the workspace's write lock:
    a burst of choices (a path, none, another path), then the terminal goes away. The app ends (129) with every
    choice kept in the journal; the next start (``sert-tui paths list``) writes them all into the workspace."""
    import os
    import re
    import sqlite3

    from db import decision_journal
    from db.session import open_workspace
    from sert_tui import hangup
    from tests.test_app_hangup import _read_until, decisions_at_next_start, end, start_in_pty

    db = tmp_path / "w.db"
    engine = open_workspace(db)
    dataset = make_dataset(engine, n_train=4)
    sample = make_sample_job(engine, dataset, n_questions=4)
    make_filter_job(engine, dataset, sample)
    with engine.connect() as conn:
        views = [curation.question_view(conn, sample, item.question_id) for item in curation.queue(conn, sample)]
    engine.dispose()
    journal = decision_journal.journal_path(db)

    proc, master, cmd = start_in_pty(db)
    lock = None
    try:
        seen = _read_until(master, proc, b"", rb"2\s+filter\s+pending")
        os.write(master, b"r")  # the newest job, the filter job: the review of the paths it judged
        seen = _read_until(master, proc, seen, rb"question 1/4")
        lock = sqlite3.connect(str(db), isolation_level=None, timeout=0)
        lock.execute("BEGIN EXCLUSIVE")  # no write lands while the app runs: the journal must keep them
        os.write(master, b"1n2")
        _read_until(master, proc, seen, rb"question 4/4")  # the last key was handled
        os.close(master)
        master = -1
        assert proc.wait(timeout=120) == hangup.HANGUP_EXIT_CODE
        assert journal.exists()
    finally:
        end(proc, master, lock)

    got, listed_err = decisions_at_next_start(cmd, db, sample)
    a, b, c, d = views
    assert a is not None and b is not None and c is not None and d is not None
    first, third = curation.in_review_order(a.survivors), curation.in_review_order(c.survivors)
    assert got[first[0].id] == CHOSEN and got[third[1].id] == CHOSEN
    assert all(got[p.id] == NO_PATH for p in b.paths)
    assert sum(v is not None for v in got.values()) == 2 + len(b.paths)
    assert re.search(r"re-applied \d+ decisions", listed_err) and not journal.exists()


def test_filters_select_curated_takes_the_choice_else_the_rep2_pick():
    from engine.config import FiltersConfig
    from engine.filtering.rules import PathInput, QuestionInput, judge_question

    question = QuestionInput("What is 1 plus 1?", "2")
    text = " One and one more make two, counted on the fingers of one hand slowly. So the answer is 2."

    def paths(decisions: list[str | None]) -> list[PathInput]:
        return [
            PathInput(i + 1, i, 0, text + " x" * i, 40, 0.01 * (3 - i), 9.0, None, decision=d)
            for i, d in enumerate(decisions)
        ]

    cfg = FiltersConfig(select="curated")
    rep2 = [r.selected for r in judge_question(paths([None, None, None]), question, FiltersConfig())]
    assert (
        [r.selected for r in judge_question(paths([None, None, None]), question, cfg)] == rep2 == [False, False, True]
    )
    chosen = judge_question(paths([None, CHOSEN, None]), question, cfg)
    assert [r.selected for r in chosen] == [False, True, False]
    assert chosen[1].verdicts["selection"]["reason"] == "chosen by hand (review screen)"
    assert not any(r.selected for r in judge_question(paths([NO_PATH] * 3), question, cfg))


async def test_r_opens_the_review_from_home_and_paths_and_help_lists_its_keys(workspace):
    from sert_tui.screens.help import binding_ids

    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
        await pilot.press("r")  # the newest job, the filter job
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen) and app.screen.loaded.is_set())
        assert app.screen.job_id == workspace["filter"]
        await pilot.press("escape", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PathsScreen) and app.screen.loaded.is_set())
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ReviewScreen))
        ids = set(binding_ids(app.help_classes()))
        assert {"review.choose_1", "review.choose_9", "review.none", "review.skip", "review.back", "review.undo"} <= ids
        assert {"home.review", "paths.review", "app.refresh"} <= ids


def test_a_study_measures_the_rules_without_the_choices_and_curated_with_them(engine):
    """``filters.use_choices``: the training set of a rep2 or random variant of a study is the rule's own
    selection, whatever a person chose; the curated variant's takes the choices (study.cell_config sets it)."""
    from engine.config import ExperimentConfig
    from engine.pipeline.study import Variant, cell_config

    dataset = make_dataset(engine, n_train=3)
    sample = make_sample_job(engine, dataset, n_questions=3)
    make_filter_job(engine, dataset, sample)
    with engine.connect() as conn:
        a = curation.question_view(conn, sample, curation.queue(conn, sample)[0].question_id)
    assert a is not None
    pick = next(p.id for p in a.survivors if not p.selected) if any(not p.selected for p in a.survivors) else None
    pick = pick or next(p.id for p in a.paths if not p.selected)
    with session_scope(engine) as s:
        set_decision(s, pick, CHOSEN)
    with_choices = training_ids(engine, sample)
    assert pick in with_choices
    with session_scope(engine) as s:
        job = s.get(Job, sample)
        data = s.get(Dataset, job.dataset_id)  # type: ignore[union-attr]
        filter_job = s.exec(select(Job.id).where(Job.parent_id == sample, Job.kind == "filter")).first()
        fid = int(filter_job[0]) if not isinstance(filter_job, int) else filter_job
        without = {x.path_id for x in sert_samples(s, job, data, fid, choices=False)}  # type: ignore[arg-type]
    assert pick not in without and with_choices - {pick} <= without | with_choices
    for rule, expected in (("rep2", False), ("random", False), ("confidence", False), ("curated", True)):
        variant = Variant((("filters.select", rule),))
        assert cell_config(ExperimentConfig(), "sqa", 1, variant).filters.use_choices is expected, rule
