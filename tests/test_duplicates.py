"""Duplicate paths: the normalisation, the marks on a hand-built workspace, ``paths list`` and
``paths reject-duplicates``, and the paths screen's bulk reject with its one undo (Pilot)."""

from __future__ import annotations

import json

import pytest
from sqlmodel import select

from db import app_queries as q
from db import duplicates
from db.models import Path
from db.paths_repo import set_decision, write_question_paths
from db.session import session_scope
from sert_tui.app import SertApp
from sert_tui.cli import main
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    cell_text,
    decisions,
    make_dataset,
    make_filter_job,
    path_rows,
    question_ids,
    wait_for,
)
from tests.test_app_paths import SIZE, open_paths, written

ANSWER = "So the answer is 2."
#: Texts put on some paths (question, k): k is the path's number in path_rows (branch k // 5, sample k % 5).
TEXTS = {
    ("a", 1): ANSWER,
    ("a", 3): "  so THE answer\n\tis 2. ",  # case and whitespace: a duplicate of a1
    ("a", 12): ANSWER,  # the very text: a duplicate of a1
    ("a", 13): "So the answer is 2",  # no full stop: not a duplicate
    ("a", 20): "Ｓｏ the answer is 2.",  # full-width letters (NFKC): a duplicate of a1
    ("a", 5): "First, ﬁnd 2.",  # the ligature ﬁ (NFKC)
    ("a", 9): "first, find 2.",  # a duplicate of a5
    ("b", 1): ANSWER,  # the same text as a1, but another question: an original
    ("b", 2): ANSWER,  # a duplicate of b1
    ("b", 24): ANSWER + " ",  # a duplicate of b1
}


# -- the normalisation -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("So the answer is yes.", "so THE ANSWER is YES."),
        ("  two\n\nlines\t here ", "two lines here"),
        ("non\u00a0breaking", "non breaking"),  # NBSP is a compatibility space
        ("Ｆｕｌｌ ｗｉｄｔｈ ２", "full width 2"),
        ("ﬁne", "fine"),
        ("Straße", "STRASSE"),  # casefold, not only lower()
        ("x\u2003y", "x y"),  # an em space is whitespace
    ],
)
def test_normalise_makes_these_equal(a: str, b: str) -> None:
    assert duplicates.normalise(a) == duplicates.normalise(b)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("So the answer is yes.", "So the answer is yes"),  # punctuation counts
        ("answer 2", "answer 3"),
        ("ab", "a b"),  # whitespace is collapsed, not removed
        ("a\u200bb", "ab"),  # a zero-width space is not whitespace
    ],
)
def test_normalise_keeps_these_apart(a: str, b: str) -> None:
    assert duplicates.normalise(a) != duplicates.normalise(b)


def test_normalise_is_idempotent_and_strips() -> None:
    for text in ("  Ｓｏ\n ﬁne ß ", "ǅ DŽ ǆ", "\u212b ANGSTROM", ""):
        once = duplicates.normalise(text)
        assert duplicates.normalise(once) == once
        assert once == once.strip() and "  " not in once
    assert duplicates.normalise(" \n\t ") == ""


# -- a hand-built workspace --------------------------------------------------------------------------------
@pytest.fixture
def dups(engine, db_path):
    """A sample job of two questions, 25 paths each, with the texts of TEXTS; question a's paths are written
    in reverse, so that their ids run against (branch, sample)."""
    from engine.jobs import create_job

    dataset = make_dataset(engine, n_train=3)
    qa, qb = question_ids(engine, dataset)[:2]
    job = create_job(engine, "sample", {"name": "dups", "filters": {}}, dataset_id=dataset, label="dups").id
    for name, qid, number in (("a", qa, 0), ("b", qb, 1)):
        rows = path_rows(number)
        for k, row in enumerate(rows):
            row["text"] = TEXTS.get((name, k), row["text"])
        with session_scope(engine) as s:
            write_question_paths(s, job, qid, rows[::-1] if name == "a" else rows)
    with session_scope(engine) as s:
        key = {(p.question_id, p.branch, p.sample): p.id for p in s.exec(select(Path).where(Path.job_id == job)).all()}
    ids = {(name, k): key[(qid, *divmod(k, 5))] for name, qid in (("a", qa), ("b", qb)) for k in range(25)}
    expected = {
        ids["a", 3]: ids["a", 1],
        ids["a", 12]: ids["a", 1],
        ids["a", 20]: ids["a", 1],
        ids["a", 9]: ids["a", 5],
        ids["b", 2]: ids["b", 1],
        ids["b", 24]: ids["b", 1],
    }
    filt = make_filter_job(engine, dataset, job)
    return {"engine": engine, "db": db_path, "job": job, "filter": filt, "ids": ids, "expected": expected, "q": qa}


def test_marks_of_the_job_of_a_question_and_of_a_page(dups) -> None:
    ids, expected = dups["ids"], dups["expected"]
    assert ids["a", 3] < ids["a", 1]  # the original is the first by (branch, sample), not by id
    with dups["engine"].connect() as conn:
        found = duplicates.find(conn, dups["job"])
        assert found.of == expected
        assert found.undecided == sorted(expected) and found.decided == 0
        only_a = duplicates.find(conn, dups["job"], [dups["q"]])
        assert only_a.of == {d: o for d, o in expected.items() if o == ids["a", 1] or o == ids["a", 5]}
        # A page carries the marks of its rows, read from their whole questions.
        page = q.page_paths(conn, dups["job"], q.PathFilter(), 0, 30)
        assert {r.id: r.duplicate_of for r in page.rows if r.duplicate_of} == {
            d: o for d, o in expected.items() if d in {r.id for r in page.rows}
        }
        assert len(page.rows) == 30 and not all(r.duplicate_of is None for r in page.rows)
        # A page that holds a duplicate but not its original still marks it.
        later = q.page_paths(conn, dups["job"], q.PathFilter(), ids["a", 3], 1)
        assert [(r.id, r.duplicate_of) for r in later.rows] == [(ids["a", 3], ids["a", 1])]


def run_cli(capsys, db_path, *args) -> tuple[int, str, str]:
    code = main(["--db", str(db_path), *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_paths_list_carries_duplicate_of(dups, capsys) -> None:
    code, out, _ = run_cli(capsys, dups["db"], "paths", "list", "--job", dups["filter"], "--json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 50
    assert {r["id"]: r["duplicate_of"] for r in rows if r["duplicate_of"] is not None} == dups["expected"]
    # Listing only some paths does not change the marks (they are those of the whole job).
    with session_scope(dups["engine"]) as s:
        set_decision(s, dups["ids"]["a", 20], "ignored")
    code, out, _ = run_cli(capsys, dups["db"], "paths", "list", "--job", dups["job"], "--decision", "ignored", "--json")
    assert [(r["id"], r["duplicate_of"]) for r in json.loads(out)] == [(dups["ids"]["a", 20], dups["ids"]["a", 1])]
    code, out, _ = run_cli(capsys, dups["db"], "paths", "list", "--job", dups["job"])
    assert code == 0 and f"={dups['ids']['a', 1]}" in out


def test_reject_duplicates_command_keeps_the_decisions_made(dups, capsys) -> None:
    ids, expected, engine = dups["ids"], dups["expected"], dups["engine"]
    with session_scope(engine) as s:
        set_decision(s, ids["a", 12], "accepted")  # a person kept this duplicate
        set_decision(s, ids["b", 24], "ignored")
        set_decision(s, ids["a", 0], "accepted")  # not a duplicate
    code, out, err = run_cli(capsys, dups["db"], "paths", "reject-duplicates", "--job", dups["filter"], "--json")
    assert code == 0, err
    doc = json.loads(out)
    rejected = sorted(set(expected) - {ids["a", 12], ids["b", 24]})
    assert doc == {
        "job": dups["filter"],
        "paths_job": dups["job"],
        "duplicates": 6,
        "undecided": 4,
        "decided": 2,
        "rejected": rejected,
    }
    got = decisions(engine, dups["job"])
    assert {pid for pid, d in got.items() if d == "rejected"} == set(rejected)
    assert got[ids["a", 12]] == "accepted" and got[ids["b", 24]] == "ignored" and got[ids["a", 0]] == "accepted"
    assert sum(d is not None for d in got.values()) == 7
    # Again: nothing left to reject; the text form says so.
    code, out, _ = run_cli(capsys, dups["db"], "paths", "reject-duplicates", "--job", dups["job"])
    assert code == 0
    assert (
        out.strip()
        == f"rejected 0 undecided duplicate paths of job {dups['job']}; 6 duplicates in all, 6 already decided (kept)"
    )
    assert decisions(engine, dups["job"]) == got
    code, out, err = run_cli(capsys, dups["db"], "paths", "reject-duplicates", "--job", 999)
    assert code == 2 and err.strip() == "error: no job with id 999" and out == ""


# -- the paths screen --------------------------------------------------------------------------------------
@pytest.mark.anyio
async def test_screen_rejects_every_undecided_duplicate_in_one_undo(dups) -> None:
    ids, expected, engine = dups["ids"], dups["expected"], dups["engine"]
    with session_scope(engine) as s:
        set_decision(s, ids["a", 12], "accepted")  # decided before the app opened
    app = SertApp(dups["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_paths(app, pilot, dups["job"], page_size=25)  # page 1: question a only
        table = screen.table
        assert {r.id for r in screen.rows} == {ids["a", k] for k in range(25)}
        assert cell_text(table, ids["a", 3], "dup") == f"={ids['a', 1]}"
        assert cell_text(table, ids["a", 1], "dup") == "" and cell_text(table, ids["a", 13], "dup") == ""
        table.move_cursor(next(i for i, r in enumerate(screen.rows) if r.id == ids["a", 9]))
        await pilot.press("space")  # a person ignores one duplicate, just before the bulk reject
        before = app.decision_writer.submitted
        await pilot.press("D")
        await wait_for(pilot, lambda: app.decision_writer.submitted == before + 1, what="the bulk reject")
        await written(app, pilot)
        got = decisions(engine, dups["job"])
        rejected = {ids["a", 3], ids["a", 20], ids["b", 2], ids["b", 24]}  # b's are on no page shown yet
        assert {pid for pid, d in got.items() if d == "rejected"} == rejected
        assert got[ids["a", 12]] == "accepted" and got[ids["a", 9]] == "ignored"
        assert sum(d is not None for d in got.values()) == 6
        assert cell_text(table, ids["a", 3], "decision") == "✗ reject"
        assert cell_text(table, ids["a", 12], "decision") == "✓ accept"

        await pilot.press("backspace")  # one undo restores every path of the bulk action
        await written(app, pilot)
        got = decisions(engine, dups["job"])
        assert {pid: d for pid, d in got.items() if d is not None} == {ids["a", 12]: "accepted", ids["a", 9]: "ignored"}
        assert cell_text(table, ids["a", 3], "decision") == ""

        # With one question shown (f), D rejects that question's duplicates only.
        await pilot.press("right_square_bracket")
        await wait_for(pilot, lambda: screen.rows and screen.rows[0].id == ids["b", 0], what="question b")
        await pilot.press("f")
        await wait_for(pilot, lambda: screen.flt.question_id is not None and screen.loads >= 3, what="filter")
        before = app.decision_writer.submitted
        await pilot.press("D")
        await wait_for(pilot, lambda: app.decision_writer.submitted == before + 1, what="the bulk reject")
        await written(app, pilot)
        got = decisions(engine, dups["job"])
        assert {pid for pid, d in got.items() if d == "rejected"} == {ids["b", 2], ids["b", 24]}
        assert set(expected) >= {pid for pid, d in got.items() if d is not None}
