"""The paths screen's per-question marks (duplicates, agreement) kept between pages: the same marks as a fresh
read, read again only for a question whose paths (or the filter generation) changed."""

from __future__ import annotations

from db.app_queries import PathFilter, page_paths
from db.page_marks import QuestionMarks
from db.paths_repo import write_question_paths
from db.session import session_scope
from tests.test_app_helpers import make_dataset, make_sample_job, path_rows, question_ids


def marks_of(page) -> list[tuple[int, int | None, int | None]]:
    return [(r.id, r.duplicate_of, r.agreement) for r in page.rows]


def test_cached_marks_equal_a_fresh_read_and_follow_new_paths(engine):
    dataset = make_dataset(engine, n_train=4)
    job = make_sample_job(engine, dataset, n_questions=2)
    with session_scope(engine) as s:  # a duplicate: the same text again, in the first question
        rows = path_rows(0, per_question=1)
        rows[0].update(branch=9, sample=9, answer="0")
        write_question_paths(s, job, question_ids(engine, dataset)[0], rows)
    cache = QuestionMarks()
    with engine.connect() as conn:
        fresh = page_paths(conn, job, PathFilter(), 0, 100)
        cached = page_paths(conn, job, PathFilter(), 0, 100, cache=cache)
        assert marks_of(cached) == marks_of(fresh) and any(r.duplicate_of for r in fresh.rows)
        assert cache.reads == 2
        page_paths(conn, job, PathFilter(), 0, 100, cache=cache)
        assert cache.reads == 2  # nothing changed: nothing read again
    with session_scope(engine) as s:  # a new path of the second question
        rows = path_rows(1, per_question=1)
        rows[0].update(branch=8, sample=8)
        write_question_paths(s, job, question_ids(engine, dataset)[1], rows)
    with engine.connect() as conn:
        again = page_paths(conn, job, PathFilter(), 0, 100, cache=cache)
        assert cache.reads == 3 and marks_of(again) == marks_of(page_paths(conn, job, PathFilter(), 0, 100))
        cache.generation = "another filter job"
        page_paths(conn, job, PathFilter(), 0, 100, cache=cache)
        assert cache.reads == 5
