"""``sert-tui paths list`` and ``sert-tui report filters``: output shapes, filters, errors."""

from __future__ import annotations

import json

import pytest

from db.models import Job, Path, Question
from db.paths_repo import set_decision
from db.session import session_scope
from engine.pipeline import run_stage
from sert_tui.cli import main
from tests.test_stage_sample_filter import insert_sample_job, make_config

PATH_KEYS = [
    "id",
    "question_index",
    "branch",
    "sample",
    "text",
    "tokens",
    "rep2",
    "perplexity",
    "confidence",
    "gold_logp",
    "answer",
    "agreement",
    "verdicts",
    "selected",
    "decision",
    "decided_at",
    "duplicate_of",
]


@pytest.fixture
def filtered(engine, sqa):
    """(sample job id, filter job id) with 2 questions x 4 paths, filtered with the default thresholds."""
    config = make_config()
    sample_id, _ = insert_sample_job(engine, sqa, config)
    [job] = run_stage(engine, config, "filter", lambda _line: None)
    return sample_id, job.id


def run_cli(capsys, db_path, *args) -> tuple[int, str, str]:
    code = main(["--db", str(db_path), *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_paths_list_json_shape(engine, db_path, filtered, capsys):
    sample_id, filter_id = filtered
    code, out, _ = run_cli(capsys, db_path, "paths", "list", "--job", sample_id, "--json")
    assert code == 0
    rows = json.loads(out)
    assert len(rows) == 8
    assert all(list(r) == PATH_KEYS for r in rows)
    with session_scope(engine) as s:
        first = s.get(Path, rows[0]["id"])
        index = s.get(Question, first.question_id).index
    assert rows[0]["question_index"] == index
    assert [r["branch"] for r in rows[:4]] == [0, 1, 2, 3]
    assert rows[0]["verdicts"]["length"] == {"pass": False, "reason": "3 tokens < 25"}
    assert rows[2]["selected"] is True and rows[2]["rep2"] == 0.05 and rows[2]["perplexity"] == 12.0
    assert rows[0]["decision"] is None and rows[0]["tokens"] == 3 and rows[0]["text"] == " Yes."

    # A filter job lists its sample job's paths.
    code, out_filter, _ = run_cli(capsys, db_path, "paths", "list", "--job", filter_id, "--json")
    assert code == 0 and json.loads(out_filter) == rows


def test_paths_list_of_an_older_filter_job_shows_its_own_verdicts(engine, db_path, filtered, capsys):
    """After a second filter run with other thresholds, the paths carry the new verdicts; the first filter
    job still lists its own (judged again from its frozen settings), and says so."""
    sample_id, first_id = filtered
    # rep-2 up to 0.5 passes branch 3 (0.30); perplexity from 12.5 fails every branch (1.5, 9, 12, 6): none selected
    other = make_config(filters={"max_rep2": 0.5, "min_perplexity": 12.5})
    [second] = run_stage(engine, other, "filter", lambda _line: None)
    assert second.id != first_id

    def listing(job_id, *extra):
        code, out, err = run_cli(capsys, db_path, "paths", "list", "--job", job_id, "--json", *extra)
        assert code == 0
        return json.loads(out), err

    now, err_now = listing(second.id)
    old, err_old = listing(first_id)
    assert err_now == "" and "now carry the verdicts of filter job" in err_old
    assert [r["id"] for r in old] == [r["id"] for r in now]
    assert [r["verdicts"]["repetition"]["pass"] for r in old if r["branch"] == 3] == [False, False]
    assert [r["verdicts"]["repetition"]["pass"] for r in now if r["branch"] == 3] == [True, True]
    report = json.loads(run_cli(capsys, db_path, "report", "filters", "--job", first_id, "--json")[1])
    old_selected, _ = listing(first_id, "--selected")
    assert len(old_selected) == report["selected"] == 2 and all(r["branch"] == 2 for r in old_selected)
    assert listing(second.id, "--selected")[0] == [] and not any(r["selected"] for r in now)
    assert listing(sample_id)[0] == now  # the sample job shows what its paths carry now


def test_paths_list_filters(engine, db_path, filtered, capsys):
    sample_id, _ = filtered
    code, out, _ = run_cli(capsys, db_path, "paths", "list", "--job", sample_id, "--selected", "--json")
    selected = json.loads(out)
    assert code == 0 and len(selected) == 2 and all(r["selected"] and r["branch"] == 2 for r in selected)

    all_rows = json.loads(run_cli(capsys, db_path, "paths", "list", "--job", sample_id, "--json")[1])
    with session_scope(engine) as s:
        set_decision(s, all_rows[0]["id"], "accepted")
        set_decision(s, all_rows[1]["id"], "rejected")
        set_decision(s, all_rows[2]["id"], "ignored")

    def ids(*extra):
        code, out, _ = run_cli(capsys, db_path, "paths", "list", "--job", sample_id, "--json", *extra)
        assert code == 0
        return [r["id"] for r in json.loads(out)]

    assert ids("--decision", "accepted") == [all_rows[0]["id"]]
    assert ids("--decision", "rejected") == [all_rows[1]["id"]]
    assert ids("--decision", "ignored") == [all_rows[2]["id"]]
    assert ids("--decision", "none") == [r["id"] for r in all_rows[3:]]
    assert ids("--decision", "ignored", "--selected") == [all_rows[2]["id"]]
    assert ids("--decision", "accepted", "--selected") == []


def test_paths_list_table(db_path, filtered, capsys):
    sample_id, _ = filtered
    code, out, _ = run_cli(capsys, db_path, "paths", "list", "--job", sample_id)
    lines = out.splitlines()
    assert code == 0 and len(lines) == 9
    assert lines[0].split()[:4] == ["id", "question", "branch", "sample"]
    assert "pattern: bare answer" in lines[1]
    assert "passed" in lines[3] and "*" in lines[3]


def test_report_filters_json_shape(db_path, filtered, capsys):
    sample_id, filter_id = filtered
    code, out, _ = run_cli(capsys, db_path, "report", "filters", "--job", filter_id, "--json")
    assert code == 0
    doc = json.loads(out)
    counts = {"questions": 2, "paths": 8, "removed": {"pattern": 2, "length": 0, "repetition": 2, "perplexity": 0}}
    assert {k: doc[k] for k in ("job", "questions", "paths", "removed", "selected")} == {
        "job": filter_id,
        **counts,
        "selected": 2,
    }
    # what each rule throws away, in the order applied, and the selection last
    assert [r["rule"] for r in doc["rules"]] == ["pattern", "length", "repetition", "perplexity"]
    assert [r["removed"] for r in doc["rules"]] == [2, 0, 2, 0] and doc["selection"]["rule"] == "selection"
    for step in [*doc["rules"], doc["selection"]]:
        assert step["removed_correct"] + step["removed_incorrect"] == step["removed"]
    # A sample job reports its paths' current verdicts.
    code, out, _ = run_cli(capsys, db_path, "report", "filters", "--job", sample_id, "--json")
    assert code == 0
    doc = json.loads(out)
    assert {k: doc[k] for k in ("job", "questions", "paths", "removed", "selected")} == {
        "job": sample_id,
        **counts,
        "selected": 2,
    }


def test_report_filters_table_in_order_applied(db_path, filtered, capsys):
    _, filter_id = filtered
    code, out, _ = run_cli(capsys, db_path, "report", "filters", "--job", filter_id)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(f"filters of job {filter_id}") and "2 questions, 8 paths" in lines[0]
    assert lines[1].split()[:5] == ["rule", "removed", "left", "fails", "alone"]
    assert "correct removed" in lines[1] and "incorrect removed" in lines[1]
    assert [ln.split()[:4] for ln in lines[2:7]] == [
        ["pattern", "2", "6", "2"],
        ["length", "0", "6", "2"],
        ["repetition", "2", "4", "2"],
        ["perplexity", "0", "4", "2"],
        ["selection", "(rep2)", "2", "2"],
    ]


@pytest.mark.parametrize(
    "args",
    [
        ("paths", "list", "--job", "999", "--json"),
        ("report", "filters", "--job", "999", "--json"),
        ("report", "filters", "--job", "999"),
    ],
)
def test_unknown_job_is_one_error_line(db_path, engine, args, capsys):
    code, out, err = run_cli(capsys, db_path, *args)
    assert code == 2 and (json.loads(out) == {"error": "no job with id 999"} if "--json" in args else out == "")
    assert err == "error: no job with id 999\n"


def test_report_filters_refuses_unfiltered_and_other_jobs(engine, db_path, sqa, capsys):
    sample_id, _ = insert_sample_job(engine, sqa, make_config())
    code, _, err = run_cli(capsys, db_path, "report", "filters", "--job", sample_id)
    assert code == 2 and err == f"error: sample job {sample_id} has no filtered paths: run --stage filter first\n"
    with session_scope(engine) as s:
        other = Job(kind="eval", status="completed")
        s.add(other)
        s.flush()
        other_id = other.id
    code, _, err = run_cli(capsys, db_path, "report", "filters", "--job", other_id)
    assert code == 2 and err == f"error: job {other_id} is a 'eval' job; report filters needs a filter or sample job\n"
