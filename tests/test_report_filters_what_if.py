"""``report filters --set``: the counts other thresholds would give, counted by hand, and nothing written."""

from __future__ import annotations

import hashlib
import json

import pytest
from sqlmodel import select

from db.models import Path, Question
from db.session import session_scope
from engine.jobs import create_job
from sert_tui.cli import main

LONG = "Bats are mammals that fly at night, and they use echolocation to find insects in the dark sky. So yes."


@pytest.fixture
def sample_job(engine, sqa):
    """Two questions; per path (tokens, rep-2, perplexity, correct)."""
    plan = [
        [(30, 0.05, 6.0, True), (30, 0.10, 3.0, True), (10, 0.05, 8.0, False)],
        [(40, 0.30, 7.0, False), (40, 0.15, 4.0, True), (40, 0.12, 2.5, False)],
    ]
    job = create_job(engine, "sample", {"filters": {}}, dataset_id=sqa.id)
    with session_scope(engine) as s:
        qids = s.exec(select(Question.id).where(Question.dataset_id == sqa.id).order_by(Question.id).limit(2)).all()
        for qid, paths in zip(qids, plan, strict=True):
            for i, (tokens, rep2, ppl, correct) in enumerate(paths):
                text = LONG if correct else LONG.replace("So yes.", "So no.")
                s.add(
                    Path(job_id=job.id, question_id=qid, branch=i, text=text, tokens=tokens, rep2=rep2, perplexity=ppl)
                )
        for qid, gold in ((qids[0], "yes"), (qids[1], "yes")):
            s.get(Question, qid).answer = gold
    return job.id


def _digest(db) -> str:
    return hashlib.sha256(db.read_bytes()).hexdigest()


def test_what_if_counts_by_hand_and_writes_nothing(db_path, engine, sample_job, capsys):
    engine.dispose()
    before = _digest(db_path)
    argv = ["--db", str(db_path), "report", "filters", "--job", str(sample_job), "--json"]
    assert main([*argv, "--set", "filters.min_perplexity=5", "--set", "filters.max_rep2=0.2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["questions"], out["paths"], out["correct"]) == (2, 6, 3)
    steps = {s["rule"]: s for s in out["rules"]}
    assert steps["length"]["removed"] == 1  # the 10-token path
    assert steps["repetition"]["removed"] == 1  # rep-2 0.30
    # perplexity >= 5 keeps only question 1's first path; the rest of the survivors (3.0, 4.0, 2.5) go
    assert steps["perplexity"]["removed"] == 3 and steps["perplexity"]["questions_left"] == 1
    assert steps["perplexity"]["questions_removed"] == 1  # question 2 keeps no path
    assert [s["questions_removed"] for s in out["rules"][:3]] == [0, 0, 0]
    assert (out["survivors"], out["survivors_correct"], out["selected"], out["selected_correct"]) == (1, 1, 1, 1)
    assert out["removed"] == {s["rule"]: s["removed"] for s in out["rules"]}

    assert main([*argv, "--set", "filters.min_perplexity=2", "--set", "filters.max_rep2=0.2"]) == 0
    loose = json.loads(capsys.readouterr().out)
    assert loose["survivors"] == 4 and loose["selected"] == 2 and loose["selected_correct"] == 1
    assert _digest(db_path) == before  # nothing written: not the file
    with session_scope(engine) as s:  # and not the rows (a write could sit in the -wal file)
        rows = s.exec(select(Path.verdicts, Path.passed, Path.selected).where(Path.job_id == sample_job)).all()
    assert rows and all(v == {} and p is None and not sel for v, p, sel in rows)


def test_what_if_refuses_bad_settings(db_path, sample_job, capsys):
    argv = ["--db", str(db_path), "report", "filters", "--job", str(sample_job)]
    assert main([*argv, "--set", "filters.nope=1"]) == 2
    assert "--set filters.nope: no such setting" in capsys.readouterr().err
    assert main([*argv, "--set", "min_perplexity=1"]) == 2
    assert "expected filters.KEY=VALUE" in capsys.readouterr().err
    assert main([*argv, "--set", "filters.min_perplexity=high"]) == 2
    assert capsys.readouterr().err.startswith("error: --set filters.min_perplexity")
    assert main([*argv, "--set", "filters.min_perplexity=4"]) == 0
    assert "nothing written" in capsys.readouterr().out


REMOVAL_KEYS = {"removed_correct", "removed_incorrect", "correct_share_removed", "correct_share_kept"}


def test_what_each_rule_throws_away_by_hand(db_path, engine, sample_job, capsys):
    """Per rule (and the selection): the correct paths it removes beside the incorrect ones, and the correct
    share among the removed and the kept, on the fixture's six paths (gold yes; correct = "So yes.")."""
    argv = ["--db", str(db_path), "report", "filters", "--job", str(sample_job)]
    sets = ["--set", "filters.min_perplexity=5", "--set", "filters.max_rep2=0.2"]
    assert main([*argv, "--json", *sets]) == 0
    out = json.loads(capsys.readouterr().out)
    steps = {s["rule"]: s for s in out["rules"]}
    assert all(REMOVAL_KEYS <= set(s) for s in out["rules"])
    pick = ("removed_correct", "removed_incorrect", "correct_share_removed", "correct_share_kept")
    # pattern removes nothing; length the 10-token wrong path; repetition the rep-2 0.30 wrong path; perplexity
    # two correct paths (3.0, 4.0) and a wrong one (2.5), keeping one correct path
    assert [steps["pattern"][k] for k in pick] == [0, 0, None, 0.5]
    assert [steps["length"][k] for k in pick] == [0, 1, 0.0, 0.6]
    assert [steps["repetition"][k] for k in pick] == [0, 1, 0.0, 0.75]
    assert [steps["perplexity"][k] for k in pick] == [2, 1, pytest.approx(2 / 3), 1.0]
    assert out["selection"]["rule"] == "selection" and out["selection"]["removed"] == 0
    assert [out["selection"][k] for k in pick] == [0, 0, None, 1.0]
    # looser: four survivors; rep-2 keeps question 1's correct path and question 2's wrong one (rep-2 0.12), so the
    # selection removes two correct paths and keeps half correct
    assert main([*argv, "--json", "--set", "filters.min_perplexity=2", "--set", "filters.max_rep2=0.2"]) == 0
    loose = json.loads(capsys.readouterr().out)["selection"]
    assert [loose[k] for k in pick] == [2, 0, 1.0, 0.5]
    assert main([*argv, *sets]) == 0
    text = capsys.readouterr().out
    assert "correct removed" in text and "correct % kept" in text and "66.7%" in text
    assert "selection (rep2)" in text and "selects nothing" in text


def test_report_of_a_filter_job_has_the_removal_keys(db_path, engine, sample_job, capsys):
    from db.models import Job
    from engine.config import FiltersConfig
    from engine.filtering.stage import refilter

    with session_scope(engine) as s:
        s.get(Job, sample_job).status = "completed"
    filt = refilter(engine, sample_job, FiltersConfig(min_perplexity=5, max_rep2=0.2, select="random", seed=3), print)
    capsys.readouterr()
    for job in (filt.id, sample_job):  # the filter job, and the sample job (its current verdicts)
        assert main(["--db", str(db_path), "report", "filters", "--job", str(job), "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert {"job", "questions", "paths", "removed", "selected", "rules", "selection"} <= set(out)
        assert out["paths"] == 6 and out["selected"] == 1
        assert [s["rule"] for s in out["rules"]] == list(out["removed"])
        assert all(REMOVAL_KEYS <= set(s) for s in [*out["rules"], out["selection"]])
        assert out["selection"]["select"] == "random" and out["selection"]["paths_left"] == 1
    assert main(["--db", str(db_path), "report", "filters", "--job", str(filt.id)]) == 0
    text = capsys.readouterr().out
    assert "selection (random)" in text and "incorrect removed" in text
