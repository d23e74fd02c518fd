"""Merging shard workspaces: natural keys, no duplicates, decisions kept, idempotent."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from sert_tui.cli import main
from tests.conftest import rt_files


def _shard(path: Path, question_positions: list[int], decide: dict[int, str] | None = None) -> None:
    """A workspace holding StrategyQA and one sample job's paths for the given train positions."""
    from db.paths_repo import set_decision, write_question_paths
    from db.queries import save_dataset, split_questions
    from db.session import open_workspace, session_scope
    from engine.data import reasoning_teacher
    from engine.jobs import JobContext, create_job

    engine = open_workspace(path)
    with session_scope(engine) as s:
        ds = save_dataset(s, reasoning_teacher.load("sqa", *rt_files("strategy_qa")))
    job = create_job(engine, "sample", {"sampling": {"seed": 1}}, fp="same-run", dataset_id=ds.id)
    ctx = JobContext(engine, job.id)
    ctx.start()
    with session_scope(engine) as s:
        questions = split_questions(s, ds.id, "train", limit=10)
        for pos in question_positions:
            rows = [
                {"branch": b, "sample": k, "text": f"q{pos} b{b} s{k}", "tokens": 30, "rep2": 0.1}
                for b in range(2)
                for k in range(2)
            ]
            write_question_paths(s, job.id, questions[pos].id, rows)
    with session_scope(engine) as s:
        for path_id, decision in (decide or {}).items():
            set_decision(s, path_id, decision)
    ctx.metrics(0, {"paths_per_s": 1.0})
    ctx.finish("completed")
    engine.dispose()


def _keys(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return sorted(
            con.execute(
                'SELECT q."index", p.branch, p.sample, p.text, p.decision FROM paths p '
                "JOIN questions q ON q.id = p.question_id"
            ).fetchall()
        )
    finally:
        con.close()


def test_two_shards_merge_into_the_paths_of_one_workspace(tmp_path: Path, capsys) -> None:
    a, b, whole, merged = (tmp_path / n for n in ("a.db", "b.db", "whole.db", "merged.db"))
    _shard(a, [0, 2, 4], decide={1: "accepted"})
    _shard(b, [1, 3], decide={2: "rejected"})
    _shard(whole, [0, 1, 2, 3, 4])
    assert main(["workspace", "merge", str(a), str(b), "--into", str(merged), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["paths"] == 20 and counts["jobs"] == 1 and counts["datasets"] == 1

    got = _keys(merged)
    assert [k[:4] for k in got] == [k[:4] for k in _keys(whole)]
    assert sorted(k[4] for k in got if k[4]) == ["accepted", "rejected"]
    con = sqlite3.connect(merged)
    assert con.execute("SELECT COUNT(*), MIN(status) FROM jobs").fetchone() == (1, "completed")
    assert con.execute("SELECT COUNT(*) FROM job_items").fetchone()[0] == 5
    assert con.execute("SELECT COUNT(*) FROM questions").fetchone()[0] == 2290
    con.close()

    # Merging the same shard again adds nothing.
    assert main(["workspace", "merge", str(a), "--into", str(merged), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again.get("paths", 0) == 0 and again.get("questions", 0) == 0
    assert _keys(merged) == got


def test_merging_a_missing_file_is_one_error_line(tmp_path: Path, capsys) -> None:
    assert main(["workspace", "merge", str(tmp_path / "nope.db"), "--into", str(tmp_path / "w.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.db: no such workspace" in err
