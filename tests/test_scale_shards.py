"""Sharded sampling end to end: two ``--shard i/2`` workspaces merged give exactly one unsharded run's paths.

Real parts: the bundled student, StrategyQA from ../shared/data imported through the CLI, SQLite files, the
``run`` and ``workspace merge`` commands. The sampler seeds each question from ``(seed, question id)``, and the
ids are the same in every fresh workspace that imports the same dataset, so a question's paths do not depend
on which shard sampled it.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sert_tui.cli import main
from tests.conftest import rt_files

CONFIG = """\
name = "shards"
[student]
device = "cpu"
[data]
dataset = "sqa"
split = "train"
train_limit = 4
[sampling]
backend = "hf"
first_tokens = 2
per_branch = 2
max_new_tokens = 6
seed = 7
"""


def _workspace(path: Path) -> None:
    dataset, split = rt_files("strategy_qa")
    argv = ["--db", str(path), "data", "import", "reasoning-teacher", "--name", "sqa"]
    assert main([*argv, "--dataset", str(dataset), "--split", str(split), "--json"]) == 0


def _paths(path: Path) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return sorted(
            con.execute(
                'SELECT q."index", p.branch, p.sample, p.text, p.tokens, p.answer FROM paths p '
                "JOIN questions q ON q.id = p.question_id"
            ).fetchall()
        )
    finally:
        con.close()


@pytest.mark.slow
def test_two_shards_merged_equal_one_unsharded_run(tmp_path: Path, capsys) -> None:
    config = tmp_path / "shards.toml"
    config.write_text(CONFIG, encoding="utf-8")
    whole, a, b, merged = (tmp_path / n for n in ("whole.db", "a.db", "b.db", "merged.db"))
    for ws in (whole, a, b):
        _workspace(ws)
    capsys.readouterr()

    assert main(["--db", str(whole), "run", str(config), "--stage", "sample"]) == 0
    assert main(["--db", str(a), "run", str(config), "--stage", "sample", "--shard", "0/2"]) == 0
    assert main(["--db", str(b), "run", str(config), "--stage", "sample", "--shard", "1/2"]) == 0
    capsys.readouterr()

    # each shard sampled its own half of the questions, nothing in common
    qa = {k[0] for k in _paths(a)}
    qb = {k[0] for k in _paths(b)}
    assert len(qa) == len(qb) == 2 and not qa & qb

    assert main(["workspace", "merge", str(a), str(b), "--into", str(merged), "--json"]) == 0
    counts = json.loads(capsys.readouterr().out)
    assert counts["jobs"] == 1 and counts["paths"] == 4 * 2 * 2

    expected = _paths(whole)
    assert len(expected) == 4 * 2 * 2
    assert len({k[:3] for k in expected}) == len(expected)
    assert _paths(merged) == expected  # same (question, branch, sample) keys and the same texts

    con = sqlite3.connect(merged)
    try:
        assert con.execute("SELECT COUNT(*), MIN(status) FROM jobs WHERE kind = 'sample'").fetchone() == (
            1,
            "completed",
        )
        assert con.execute("SELECT COUNT(*) FROM job_items").fetchone()[0] == 4
    finally:
        con.close()
