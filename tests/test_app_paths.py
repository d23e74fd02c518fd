"""The paths screen: decisions, undo, bulk accept, filters, live preview, new paths while sampling, paging.

Every test runs the real app on a real workspace file whose rows were written by the repository functions
the engine uses, and checks both the database and what the screen shows.
"""

from __future__ import annotations

import pytest

from db.paths_repo import write_question_paths
from db.session import session_scope
from sert_tui.app import SertApp
from sert_tui.screens.paths import PathsScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    cell_text,
    decisions,
    make_dataset,
    make_filter_job,
    make_sample_job,
    path_rows,
    question_ids,
    screen_dump,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio
SIZE = (200, 60)


@pytest.fixture
def workspace(engine, db_path):
    dataset = make_dataset(engine, n_train=5)
    sample = make_sample_job(engine, dataset, n_questions=3)
    filt = make_filter_job(engine, dataset, sample)
    return {"engine": engine, "db": db_path, "dataset": dataset, "sample": sample, "filter": filt}


async def open_paths(app: SertApp, pilot, job_id: int, page_size: int = 100) -> PathsScreen:
    await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
    screen = PathsScreen(job_id, page_size=page_size)
    await app.push_screen(screen)
    await wait_for(pilot, lambda: screen.loaded.is_set() and screen.loads >= 1, what="first page")
    return screen


async def written(app: SertApp, pilot) -> None:
    """Wait until every decision made is in the workspace."""
    app.decision_writer.flush()
    await pilot.pause(0.05)


async def test_filter_job_opens_its_sample_paths_with_badges_and_detail(workspace):
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        # Enter on the filter job (the newest, highlighted first) opens the paths it judged.
        await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, PathsScreen) and app.screen.loaded.is_set())
        screen = app.screen
        assert isinstance(screen, PathsScreen)
        assert screen.job_id == workspace["filter"] and screen.paths_job == workspace["sample"]
        assert len(screen.rows) == 75
        table = screen.table
        first = screen.rows[0]
        # Path 0 fails the pattern rule only (k % 7 == 0); the badges follow the rule order.
        assert cell_text(table, str(first.id), "rules") == "✗✓✓✓"
        selected = [r for r in screen.rows if r.selected]
        assert len(selected) == 3 and all(cell_text(table, str(r.id), "sel") == "★" for r in selected)
        detail = screen_text(app)
        assert "What is 2 plus 1? Question number 0." in detail  # the full question
        assert "Gold answer: 3" in detail
        assert "Parsed answer: 0" in detail and "✓ correct" in detail  # k=0: correct per the fixture
        assert "pattern failed" in detail  # the reason of the failing rule
        assert "Path (raw)" in detail and "\\nSo the answer is 0." in detail  # raw keeps the newline visible
        assert "Training set (self-train): 3 paths = 3 selected & not rejected + 0 accepted by hand" in detail
        assert "paths of job" in detail


async def test_accept_reject_ignore_write_at_once_and_advance_to_next_undecided(workspace):
    engine = workspace["engine"]
    ids = sorted(decisions(engine, workspace["sample"]))
    # Someone (another app instance) already decided the second path: auto-advance must skip it.
    with session_scope(engine) as s:
        from db.paths_repo import set_decision

        set_decision(s, ids[1], "rejected")
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"])
        table = screen.table
        assert table.cursor_row == 0
        await pilot.press("a")
        assert cell_text(table, str(ids[0]), "decision") == "✓ accept"  # on screen at once
        assert table.cursor_row == 2  # skipped the decided second path
        await pilot.press("x")
        assert table.cursor_row == 3
        await pilot.press("space")
        await written(app, pilot)
        got = decisions(engine, workspace["sample"])
        assert got[ids[0]] == "accepted" and got[ids[1]] == "rejected"
        assert got[ids[2]] == "rejected" and got[ids[3]] == "ignored"
        assert sum(v is not None for v in got.values()) == 4
        await wait_for(pilot, lambda: screen.counts.accepted == 1 and screen.counts.ignored == 1, what="counts")
        assert "1 accepted · 2 rejected · 1 ignored · 71 undecided" in screen_text(app)


async def test_backspace_undoes_several_levels(workspace):
    engine = workspace["engine"]
    ids = sorted(decisions(engine, workspace["sample"]))
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"])
        for key in ("a", "x", "space"):
            await pilot.press(key)
        await pilot.press("backspace")
        await pilot.press("backspace")
        await written(app, pilot)
        got = decisions(engine, workspace["sample"])
        assert got[ids[0]] == "accepted" and got[ids[1]] is None and got[ids[2]] is None
        assert screen.table.cursor_row == 1  # back on the path whose decision was undone
        assert cell_text(screen.table, str(ids[1]), "decision") == ""
        await pilot.press("backspace")
        await pilot.press("backspace")  # nothing left: a notice, no change
        await written(app, pilot)
        assert all(v is None for v in decisions(engine, workspace["sample"]).values())


async def test_bulk_accept_question_and_page_are_one_undo_step(workspace):
    engine = workspace["engine"]
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"])
        first_q = screen.rows[0].question_id
        passed_q = {r.id for r in screen.rows if r.question_id == first_q and r.passed}
        await pilot.press("x")  # reject path 0 first: a bulk accept never overrides a person's decision
        await pilot.press("A")
        await written(app, pilot)
        got = decisions(engine, workspace["sample"])
        assert {pid for pid, d in got.items() if d == "accepted"} == passed_q
        assert got[screen.rows[0].id] == "rejected"
        assert all(cell_text(screen.table, str(pid), "decision") == "✓ accept" for pid in passed_q)
        await pilot.press("backspace")  # one step undoes the whole bulk action
        await written(app, pilot)
        got = decisions(engine, workspace["sample"])
        assert [d for d in got.values() if d] == ["rejected"]
        await pilot.press("P")  # every undecided path on the page that passed
        await written(app, pilot)
        got = decisions(engine, workspace["sample"])
        passed_all = {r.id for r in screen.rows if r.passed}
        assert {pid for pid, d in got.items() if d == "accepted"} == passed_all
        await pilot.press("backspace")
        await written(app, pilot)
        assert [d for d in decisions(engine, workspace["sample"]).values() if d] == ["rejected"]


async def test_filters_show_exactly_the_matching_paths(workspace):
    engine = workspace["engine"]
    qids = question_ids(engine, workspace["dataset"])
    # Teacher rationales for one question, as a teacher job writes them (source "teacher").
    teacher_rows = [
        {"source": "teacher", "branch": 0, "sample": i, "text": f"Step {i}.", "tokens": 30} for i in range(2)
    ]
    with session_scope(engine) as s:
        write_question_paths(s, workspace["sample"], qids[4], teacher_rows)
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"])
        assert len(screen.rows) == 77
        await pilot.press("a")  # accept path 0 (it failed pattern)

        async def press(key: str) -> None:
            before = screen.loads
            await pilot.press(key)
            await wait_for(pilot, lambda: screen.loads > before, what=f"page after {key}")

        await press("d")  # undecided
        assert len(screen.rows) == 76 and all(r.decision is None for r in screen.rows)
        await press("d")  # accepted
        assert [r.id for r in screen.rows] == [min(decisions(engine, workspace["sample"]))]
        await press("F")
        await press("v")  # passed every rule
        assert len(screen.rows) == 36 and all(r.passed for r in screen.rows)
        assert "verdict=passed" in screen_text(app)
        await press("v")  # failed a rule
        assert len(screen.rows) == 39 and all(r.passed is False for r in screen.rows)
        await press("F")
        await press("s")  # selected
        assert len(screen.rows) == 3 and all(r.selected for r in screen.rows)
        await press("F")
        await press("o")  # self
        assert len(screen.rows) == 75
        await press("o")  # teacher
        assert len(screen.rows) == 2 and all(r.source == "teacher" for r in screen.rows)
        assert cell_text(screen.table, str(screen.rows[0].id), "src") == "tchr"
        await press("F")
        await press("c")  # correct
        assert len(screen.rows) == 21 and all(r.correct for r in screen.rows)  # k % 4 == 0: 7 per question
        await press("c")  # incorrect
        assert len(screen.rows) == 54 and all(r.correct is False for r in screen.rows)
        await press("F")
        screen.table.move_cursor(row=30)  # a path of the second question
        await press("f")
        assert len(screen.rows) == 25 and {r.question_index for r in screen.rows} == {1}
        await press("f")
        assert len(screen.rows) == 77
        await pilot.press("slash")
        await pilot.press(*"number 2.")
        await press("enter")
        assert len(screen.rows) == 25 and {r.question_index for r in screen.rows} == {2}
        assert "question~'number 2.'" in screen_text(app)
        await pilot.press("slash")
        for _ in range(9):
            await pilot.press("backspace")
        await pilot.press(*"no such question")
        await press("enter")
        assert screen.rows == [] and "no paths match the filters" in screen_text(app)
        await press("F")
        assert len(screen.rows) == 77


async def test_training_set_preview_follows_decisions(workspace):
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"])
        assert screen.counts.training_set == 3
        selected = next(i for i, r in enumerate(screen.rows) if r.selected)
        screen.table.move_cursor(row=selected)
        await pilot.press("x")  # rejecting a selected path removes it from the training set
        await wait_for(pilot, lambda: screen.counts.training_set == 2, what="preview after reject")
        screen.table.move_cursor(row=1)
        await pilot.press("a")  # accepting any path adds it
        await wait_for(pilot, lambda: screen.counts.training_set == 3, what="preview after accept")
        assert "Training set (self-train): 3 paths = 2 selected & not rejected + 1 accepted by hand" in screen_text(app)


async def test_new_paths_appear_while_sampling_without_losing_place(workspace):
    engine = workspace["engine"]
    qids = question_ids(engine, workspace["dataset"])
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"])
        screen.table.move_cursor(row=40)
        place = screen.current_row()
        assert place is not None
        # The sampler finishes another question: written the way the sample stage writes it.
        with session_scope(engine) as s:
            write_question_paths(s, workspace["sample"], qids[3], path_rows(3, filtered=False))
        await wait_for(pilot, lambda: len(screen.rows) == 100, what="new paths on the open page")
        assert screen.current_row().id == place.id and screen.table.cursor_row == 40
        # The page is full now; more paths are announced without moving the person.
        with session_scope(engine) as s:
            write_question_paths(s, workspace["sample"], qids[4], path_rows(4, filtered=False))
        await wait_for(pilot, lambda: screen.has_next, what="next page announced")
        await wait_for(pilot, lambda: "+50 new since opened" in screen_text(app), what="new count")
        assert screen.current_row().id == place.id
        # Unfiltered new paths show no badges yet.
        before = screen.loads
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: screen.loads > before)
        assert len(screen.rows) == 25 and cell_text(screen.table, str(screen.rows[0].id), "rules") == "····"


async def test_keyset_paging_keys(workspace):
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, workspace["sample"], page_size=30)
        all_ids = sorted(decisions(workspace["engine"], workspace["sample"]))

        async def press(key: str) -> list[int]:
            before = screen.loads
            await pilot.press(key)
            await wait_for(pilot, lambda: screen.loads > before, what=f"page after {key}")
            return [r.id for r in screen.rows]

        assert [r.id for r in screen.rows] == all_ids[:30] and screen.has_next and not screen.has_prev
        assert await press("right_square_bracket") == all_ids[30:60]
        assert await press("right_square_bracket") == all_ids[60:75] and not screen.has_next
        assert await press("left_square_bracket") == all_ids[30:60]
        assert screen.table.cursor_row == 29  # going back lands on the row just before
        assert await press("g") == all_ids[:30]
        assert await press("G") == all_ids[45:75]
        # Deciding the last undecided row of a page moves on to the next page's first undecided path.
        await press("g")
        screen.table.move_cursor(row=29)
        before = screen.loads
        await pilot.press("a")
        await wait_for(pilot, lambda: screen.loads > before, what="auto-advance to the next page")
        assert screen.rows[0].id == all_ids[30] and screen.table.cursor_row == 0
        await pilot.press("escape")
        assert not isinstance(app.screen, PathsScreen)


async def test_teacher_job_shows_its_rationales(engine, db_path):
    """A teacher job's rationales (source "teacher", as engine.teacher.store writes them) open like paths."""
    from engine.jobs import create_job

    dataset = make_dataset(engine, n_train=3)
    teacher = create_job(engine, "teacher", {"teacher": {"model": "t"}}, dataset_id=dataset, label="recorded").id
    for n, qid in enumerate(question_ids(engine, dataset)):
        row = {
            "source": "teacher",
            "branch": 0,
            "sample": 0,
            "text": f"Let me add. So the answer is {n}.",
            "tokens": 9,
            "answer": str(n),
            "correct": n != 1,
        }
        with session_scope(engine) as s:
            write_question_paths(s, teacher, qid, [row])
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
        await pilot.press("enter")  # the only job
        await wait_for(pilot, lambda: isinstance(app.screen, PathsScreen) and app.screen.loads >= 1)
        screen = app.screen
        assert [r.source for r in screen.rows] == ["teacher"] * 3
        text = screen_text(app)
        assert "Teacher rationales (for distillation): 3 · 2 with the correct answer" in text
        assert "source teacher" in text and "Let me add. So the answer is 0." in text
        await pilot.press("x")  # a person can reject a rationale like any path
        app.decision_writer.flush()
        assert decisions(engine, teacher)[screen.rows[0].id] == "rejected"


async def test_confidence_and_agreement_columns_sort_the_page(engine, db_path):
    """conf and agr show each path's Δ and how many of its question's paths give its answer; S orders the page's
    rows by confidence, then agreement (highest first, missing last), then back to ids; paging still walks the
    keyset pages of ids."""
    from engine.jobs import create_job

    dataset = make_dataset(engine, n_train=3)
    job = create_job(engine, "sample", {"name": "t"}, dataset_id=dataset, label="conf")
    answers = ["1", "2", "1", None, "1", "2", "3", None]
    confidence = [0.2, 0.9, 0.5, None, 0.7, 0.1, 0.95, None]
    for number, qid in enumerate(question_ids(engine, dataset)[:2]):
        rows = [
            dict(branch=k, sample=0, text=f" path {k} of {number}", tokens=30, rep2=0.0, answer=a, confidence=c)
            for k, (a, c) in enumerate(zip(answers, confidence, strict=True))
        ]
        with session_scope(engine) as s:
            write_question_paths(s, job.id, qid, rows)
    app = SertApp(db_path, engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, job.id, page_size=10)
        ids = [r.id for r in screen.rows]
        assert ids == sorted(ids) and len(ids) == 10
        table = screen.table
        first = screen.rows[:8]  # question 0, in branch order
        assert [cell_text(table, r.id, "conf") for r in first] == [
            "0.200",
            "0.900",
            "0.500",
            "",
            "0.700",
            "0.100",
            "0.950",
            "",
        ]
        assert [cell_text(table, r.id, "agr") for r in first] == ["3", "2", "3", "", "3", "2", "1", ""]
        screen.table.move_cursor(row=2)
        place = screen.current_row()

        await pilot.press("S")
        assert screen.sort == "confidence"
        shown = [r.confidence for r in screen.rows]
        known = [c for c in shown if c is not None]
        assert known == sorted(known, reverse=True) and shown[len(known) :] == [None] * (len(shown) - len(known))
        assert screen.current_row().id == place.id  # the cursor stays on its path
        assert "sorted by confidence" in screen_text(app)

        await pilot.press("S")
        agreement = [r.agreement for r in screen.rows]
        assert screen.sort == "agreement" and agreement[:3] == [3, 3, 3] and agreement[-1] is None
        # the next page starts after the largest id of this one, whatever the order on screen
        before = screen.loads
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: screen.loads > before, what="next page")
        assert min(r.id for r in screen.rows) == max(ids) + 1 and len(screen.rows) == 6

        await pilot.press("S")
        assert screen.sort == "id" and [r.id for r in screen.rows] == sorted(r.id for r in screen.rows)


@pytest.mark.parametrize("size", [(160, 50), (240, 50)])
async def test_gold_log_likelihood_column_and_detail(workspace, size):
    """A scored path's gold log-likelihood is its row's glp cell and is in its detail; at 160 columns beside the
    detail pane the decision column is still shown (glp is the last column)."""
    from sqlmodel import func, select

    from db.models import Path

    with session_scope(workspace["engine"]) as s:
        first = s.exec(select(func.min(Path.id)).where(Path.job_id == workspace["sample"])).one()
        s.get(Path, first).gold_logp = -3.21
    app = SertApp(workspace["db"], engine=workspace["engine"])
    async with app.run_test(size=size) as pilot:
        screen = await open_paths(app, pilot, workspace["filter"])
        assert cell_text(screen.table, str(first), "glp") == "-3.21"
        assert cell_text(screen.table, str(first + 1), "glp") == ""
        await wait_for(
            pilot, lambda: "gold log-likelihood -3.210" in " ".join(screen_text(app).split()), what="the detail"
        )
        shown = screen_dump(app)  # what a person sees, the table cut to its pane
        assert " decision " in shown
        assert (" glp" in shown) == (size[0] > 160)
