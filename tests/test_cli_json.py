"""Every command that takes ``--json`` prints exactly one JSON document on stdout, in every mode: success,
failure (exit code 2, one ``error:`` line on stderr, the document ``{"error": ...}``), a usage error, under
``--launcher accelerate``, sharded and resumed; progress and logs go to stderr.

The student is a tiny random Llama with the bundled student's tokenizer, so that each stage costs seconds.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import threading
from contextlib import redirect_stderr, redirect_stdout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from db.models import Checkpoint, Evaluation, Job, JobEvent
from db.session import open_workspace, session_scope
from sert_tui.cli import build_parser, main
from tests.conftest import SHARED_DATA, rt_files

#: Each command with --json and the test that runs it (successful and failing); checked against the parser.
TESTED = {
    ("run",): "test_run, test_run_resumed_and_sharded, test_run_under_the_accelerate_launcher, "
    "test_run_rounds_and_default",
    ("study",): "test_failures_are_one_json_document (a study trains every stage of every seed)",
    ("data", "import", "reasoning-teacher"): "workspace fixture",
    ("data", "import", "jsonl"): "test_data",
    ("data", "import", "hf"): "test_data",
    ("data", "generate"): "test_data",
    ("data", "list"): "test_data",
    ("jobs", "list"): "test_reports_and_exports",
    ("paths", "list"): "test_reports_and_exports",
    ("paths", "reject-duplicates"): "test_reports_and_exports",
    ("report", "filters"): "test_reports_and_exports",
    ("report", "runs"): "test_reports_and_exports",
    ("report", "compare"): "test_reports_and_exports",
    ("report", "coverage"): "test_reports_and_exports",
    ("export", "set"): "test_reports_and_exports",
    ("export", "paths"): "test_reports_and_exports",
    ("teacher", "import", "reasoning-teacher"): "test_teacher",
    ("teacher", "batch-export"): "test_teacher",
    ("teacher", "batch-import"): "test_teacher",
    ("teacher", "jobs"): "test_teacher",
    ("teacher", "judge"): "test_teacher",
    ("workspace", "merge"): "test_workspace_merge",
}

CONFIG = """\
name = "tiny"
[student]
model = "{student}"
device = "cpu"
[data]
dataset = "sqa"
train_limit = 4
test_limit = 2
[sampling]
max_new_tokens = 8
[train]
batch_size = 2
max_steps = 2
save_steps = 1
max_length = 48
bf16 = "off"
seed = {seed}
[eval]
max_new_tokens = 8
[teacher]
base_url = "http://127.0.0.1:9/v1"
model = "teacher"
"""


def json_commands() -> set[tuple[str, ...]]:
    """The commands of ``sert-tui`` that take ``--json``."""

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, (*path, name))
            elif "--json" in action.option_strings:
                yield path

    return set(walk(build_parser(), ()))


def command_of(argv: list[str]) -> tuple[str, ...]:
    words = [w for w in argv if not w.startswith("-")]
    for n in (3, 2, 1):
        if tuple(words[:n]) in TESTED:
            return tuple(words[:n])
    raise AssertionError(f"{argv}: not a command of TESTED")


def cli(*argv: Any, db: Path | None = None, code: int = 0, capfd: Any = None) -> tuple[Any, str]:
    """Run ``sert-tui [--db DB] ARGV --json``; assert the exit code, that stdout is one JSON document and
    nothing else, and for a failure (2) one ``error:`` line on stderr whose message the document carries.
    ``capfd``: also what child processes wrote to the file descriptors (stdout: nothing). Returns the
    document and stderr."""
    words = [str(a) for a in argv]
    command_of(words)
    out, err = io.StringIO(), io.StringIO()
    if capfd is not None:
        capfd.readouterr()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main([*(["--db", str(db)] if db else []), *words, "--json"])
    stderr = err.getvalue()
    if capfd is not None:
        fds = capfd.readouterr()
        assert fds.out == ""
        stderr += fds.err
    assert rc == code, stderr
    doc = json.loads(out.getvalue())  # json.loads refuses anything after the one document
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    if code == 2:
        assert len(errors) == 1, stderr
        assert isinstance(doc, dict) and doc["error"] == errors[0].removeprefix("error: ")
    else:
        assert not errors and not (isinstance(doc, dict) and "error" in doc), stderr
    return doc, stderr


def _query(db: Path, sql: str, *args: Any) -> list[tuple]:
    import sqlite3

    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def _correct_by_question(db: Path, evaluation: int) -> dict[int, bool]:
    rows = _query(db, "SELECT question_id, correct FROM predictions WHERE evaluation_id = ?", evaluation)
    return {q: bool(c) for q, c in rows}


def _any_correct_share(db: Path, job: int) -> float:
    rows = _query(db, "SELECT question_id, MAX(correct IS 1) FROM paths WHERE job_id = ? GROUP BY question_id", job)
    return sum(ok for _q, ok in rows) / len(rows)


def _row_counts(db: Path, tables: list[str]) -> dict[str, int]:
    return {t: _query(db, f"SELECT COUNT(*) FROM {t}")[0][0] for t in tables}


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    """A tiny random model with the bundled student's tokenizer, saved like any local student model."""
    from tests.conftest import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("student"))


def new_workspace(folder: Path, student: Path, seed: int = 0) -> tuple[Path, Path]:
    """A workspace with StrategyQA imported (through ``data import --json``) and a config of the tiny student."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "w.db"
    dataset, split = rt_files("strategy_qa")
    doc, _ = cli("data", "import", "reasoning-teacher", "--name", "sqa", "--dataset", dataset, "--split", split, db=db)
    assert doc["name"] == "sqa" and doc["splits"]["train"] > 0
    config = folder / "tiny.toml"
    config.write_text(CONFIG.format(student=student, seed=seed), encoding="utf-8")
    return db, config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, student: Path) -> dict[str, Any]:
    """The pipeline of the tiny student: sample, filter, finetune, eval, each through ``run --json``."""
    db, config = new_workspace(tmp_path_factory.mktemp("ws"), student)
    jobs = {}
    for stage in ("sample", "filter", "finetune", "eval"):
        doc, _ = cli("run", config, "--stage", stage, db=db)
        assert doc["jobs"] and all(j["status"] == "completed" for j in doc["jobs"]), doc
        jobs[stage] = doc["jobs"]
    return {"db": db, "config": config, "jobs": jobs}


# -- run -------------------------------------------------------------------------------------------------------
def test_run(workspace, tmp_path: Path) -> None:
    db, config = workspace["db"], workspace["config"]
    assert [j["kind"] for j in workspace["jobs"]["eval"]] == ["eval", "eval"]  # zero-shot and Finetune
    doc, err = cli("run", config, "--stage", "finetune", db=db)  # done already: skipped, still one document
    assert doc == {"jobs": workspace["jobs"]["finetune"]} and "already completed" in err

    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('dataset = "sqa"', 'dataset = "nope"'))
    doc, _ = cli("run", bad, "--stage", "sample", db=db, code=2)
    assert doc == {"jobs": [], "error": "no dataset named 'nope' (datasets: sqa)"}
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    doc, _ = cli("run", broken, "--stage", "sample", db=db, code=2)
    assert set(doc) == {"error"} and str(broken) in doc["error"]


def test_run_resumed_and_sharded(student: Path, tmp_path: Path) -> None:
    """A finetune job that lost its final checkpoint resumes from its step-1 state file; a sampling shard."""
    db, config = new_workspace(tmp_path / "resume", student)
    [job] = cli("run", config, "--stage", "finetune", db=db)[0]["jobs"]
    engine = open_workspace(db)
    try:
        with session_scope(engine) as s:
            final = s.exec(select(Checkpoint).where(Checkpoint.job_id == job["id"], Checkpoint.is_final)).one()
            shutil.rmtree(final.path)
            s.delete(final)
            s.get(Job, job["id"]).status = "failed"
        doc, err = cli("run", config, "--stage", "finetune", db=db)
        assert doc == {"jobs": [job]} and f"job {job['id']} finetune: resuming (failed)" in err
        with session_scope(engine) as s:
            events = [e.message for e in s.exec(select(JobEvent).where(JobEvent.job_id == job["id"])).all()]
        assert any(m.startswith("resuming from checkpoint step 1") for m in events)
    finally:
        engine.dispose()

    shard_db, shard_config = new_workspace(tmp_path / "shard", student)
    doc, _ = cli("run", shard_config, "--stage", "sample", "--shard", "1/2", db=shard_db)
    assert [(j["kind"], j["status"]) for j in doc["jobs"]] == [("sample", "completed")]


LOOSE_FILTERS = "[filters]\nmin_tokens = 1\nmax_rep2 = 1.0\nmin_perplexity = 0.0\n"


def test_run_rounds_and_default(student: Path, tmp_path: Path) -> None:
    """``--rounds`` and ``--default``: one document with the jobs, the rounds and their accuracies; a round that
    fails is one document with the jobs it touched and the error; combinations that mean nothing are refused."""
    from engine.pipeline.processes import default_config_path

    db, config = new_workspace(tmp_path / "rounds", student)
    # The paper's filters leave none of these 8-token paths: round 1 stops at its empty training set.
    doc, _ = cli("run", config, "--stage", "self-train", "--rounds", 2, db=db, code=2)
    assert [j["kind"] for j in doc["jobs"]] == ["sample", "filter"] and "training set" in doc["error"]
    loose = tmp_path / "loose.toml"
    loose.write_text(config.read_text() + LOOSE_FILTERS)
    doc, err = cli("run", loose, "--stage", "self-train", "--rounds", 2, db=db)
    assert set(doc) == {"jobs", "rounds", "zero_shot"} and len(doc["jobs"]) == 9
    first, second = doc["rounds"]
    assert (first["label"], second["label"]) == ("SERT", "SERT r2")
    assert second["start_model"] == first["checkpoint"] and first["start_model"] == str(student)
    assert [r["accuracy"]["n"] for r in doc["rounds"]] == [2, 2] and doc["zero_shot"]["accuracy"]["n"] == 2
    assert "rounds: step 9 of 9" in err

    cli("run", config, "--stage", "eval", "--rounds", 2, db=db, code=2)
    doc, _ = cli("run", config, "--default", db=db, code=2)
    assert doc == {"error": "run --default takes no CONFIG: it runs the default config beside the workspace"}
    default = default_config_path(db)
    default.write_text("[student\n")
    doc, _ = cli("run", "--default", db=db, code=2)
    assert doc["jobs"] == [] and str(default) in doc["error"]
    default.write_text(loose.read_text())  # the default config beside the workspace, at this size
    doc, _ = cli("run", "--default", db=db)
    assert [j["kind"] for j in doc["jobs"]] == ["sample", "filter", "self-train", "eval", "eval"]
    assert doc["rounds"][0]["jobs"]["self-train"] == first["jobs"]["self-train"]  # the same loop: all done
    assert doc["zero_shot"]["accuracy"]["label"] == "zero-shot"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_run_under_the_accelerate_launcher(student: Path, tmp_path: Path, capfd) -> None:
    """Two gloo processes: rank 0's result is the one document (the processes' output went to stderr), also
    when rank 0 fails; a launch refused before any process starts is one document too."""
    db, config = new_workspace(tmp_path / "ddp", student)
    launch = ["--launcher", "accelerate", "--num-processes", "2"]
    port = ["--main-process-port", _free_port()]
    doc, err = cli("run", config, "--stage", "finetune", *launch, *port, db=db, capfd=capfd)
    assert [(j["kind"], j["status"]) for j in doc["jobs"]] == [("finetune", "completed")]
    assert "over 2 processes" in err and "checkpoint step 2 (final)" in err
    one = ["--launcher", "accelerate", "--num-processes", "1"]  # accelerate's one-process launcher: no DDP
    again, err = cli("run", config, "--stage", "finetune", *one, db=db, capfd=capfd)
    assert again == doc and "already completed" in err

    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace('dataset = "sqa"', 'dataset = "nope"'))
    port = ["--main-process-port", _free_port()]
    doc, _ = cli("run", bad, "--stage", "finetune", *launch, *port, db=db, code=2, capfd=capfd)
    assert doc == {"jobs": [], "error": "no dataset named 'nope' (datasets: sqa)"}

    doc, _ = cli("run", config, "--stage", "sample", *launch, db=db, code=2, capfd=capfd)
    assert doc["error"].startswith("--launcher accelerate runs a training stage")


# -- the other commands ----------------------------------------------------------------------------------------
def test_data(tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    questions = tmp_path / "q.jsonl"
    questions.write_text('{"question": "Is water wet?", "answer": "yes", "split": "train"}\n')
    doc, _ = cli("data", "import", "jsonl", "--name", "mine", "--file", questions, db=db)
    assert doc["splits"] == {"train": 1}
    import datasets

    datasets.Dataset.from_list([{"question": "2+2?", "answer": "4"}]).save_to_disk(str(tmp_path / "hf"))
    doc, _ = cli("data", "import", "hf", "--name", "hfset", "--path", tmp_path / "hf", db=db)
    assert doc["splits"] == {"train": 1}
    doc, _ = cli("data", "generate", "basic_arithmetic", "--train", 2, "--test", 1, db=db)
    assert doc["splits"] == {"train": 2, "test": 1}
    doc, _ = cli("data", "list", db=db)
    assert sorted(d["name"] for d in doc) == ["basic_arithmetic", "hfset", "mine"]
    cli("data", "import", "jsonl", "--name", "x", "--file", tmp_path / "missing.jsonl", db=db, code=2)
    cli("data", "generate", "no_such_task", db=db, code=2)


def test_reports_and_exports(workspace, tmp_path: Path) -> None:
    db, config, jobs = workspace["db"], workspace["config"], workspace["jobs"]
    sample, filt = jobs["sample"][0]["id"], jobs["filter"][0]["id"]
    doc, _ = cli("jobs", "list", db=db)
    assert [j["kind"] for j in doc["jobs"]][:4] == ["sample", "filter", "finetune", "eval"]
    doc, _ = cli("paths", "list", "--job", sample, db=db)
    assert len(doc) == 4 * 25
    for r in doc:  # path confidence and self-consistency agreement, the latter recounted from the answers listed
        same = sum(o["question_index"] == r["question_index"] and o["answer"] == r["answer"] for o in doc)
        assert r["agreement"] == (None if r["answer"] is None else same)
        assert r["confidence"] is None or 0.0 <= r["confidence"] <= 1.0
        assert r["gold_logp"] is None  # scored only by a filter job with select = gold_likelihood
    undecided_duplicates = sorted(r["id"] for r in doc if r["duplicate_of"] is not None and r["decision"] is None)
    doc, _ = cli("report", "filters", "--job", filt, db=db)
    assert doc["paths"] == 100
    removal = {"removed_correct", "removed_incorrect", "correct_share_removed", "correct_share_kept"}
    assert [s["rule"] for s in doc["rules"]] == list(doc["removed"])
    assert all(removal <= set(s) for s in [*doc["rules"], doc["selection"]])
    assert doc["selection"]["paths_left"] == doc["selected"]
    doc, _ = cli("report", "runs", db=db)
    assert {r["label"] for r in doc} >= {"zero-shot", "Finetune"}
    doc, _ = cli("report", "compare", "--a", "Finetune", "--b", "zero-shot", db=db)
    [row] = doc  # one dataset, one split: the 2 test questions (test_limit), paired
    assert (row["dataset"], row["split"], row["a"], row["b"], row["n"]) == ("sqa", "test", "Finetune", "zero-shot", 2)
    a, b = _correct_by_question(db, row["eval_a"]), _correct_by_question(db, row["eval_b"])
    assert len(a) == len(b) == 2 and a.keys() == b.keys()
    assert row["a_only"] == sum(a[q] and not b[q] for q in a) and row["b_only"] == sum(b[q] and not a[q] for q in a)
    assert (row["acc_a"], row["acc_b"]) == (sum(a.values()) / 2, sum(b.values()) / 2)
    doc, _ = cli("report", "coverage", "--job", sample, db=db)
    assert (doc["job"], doc["sample_job"], doc["questions"]) == (sample, sample, 4)  # train_limit 4
    assert doc["any_correct"] == _any_correct_share(db, sample)
    doc, _ = cli("export", "set", config, "--stage", "finetune", "--out", tmp_path / "set.jsonl", db=db)
    assert doc["records"] == 4
    doc, _ = cli("export", "paths", "--job", sample, "--out", tmp_path / "paths.jsonl", db=db)
    assert doc["records"] == 100
    doc, _ = cli("paths", "reject-duplicates", "--job", filt, db=db)  # last: it decides paths
    assert doc["paths_job"] == sample and doc["rejected"] == undecided_duplicates

    for argv in (
        ("paths", "list", "--job", 999),
        ("paths", "reject-duplicates", "--job", 999),
        ("report", "filters", "--job", 999),
        ("report", "coverage", "--job", 999),
        ("report", "compare", "--a", "Finetune"),
        ("export", "paths", "--job", sample, "--out", tmp_path / "paths.jsonl"),  # exists, no --force
    ):
        cli(*argv, db=db, code=2)


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that grades everything the same."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        scores = {"coherence": 5, "relevance": 6, "logical_consistency": 7, "completeness": 8}
        message = {"role": "assistant", "content": json.dumps(scores)}
        reply = {
            "id": "c",
            "object": "chat.completion",
            "created": 0,
            "model": "judge",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def test_teacher(workspace, tmp_path: Path, monkeypatch) -> None:
    from tests.test_teacher_batch import _ok_line

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    db, config = workspace["db"], workspace["config"]
    recorded = SHARED_DATA / "teacher-text-davinci-002" / "D_strategy_qa.json"
    doc, _ = cli("teacher", "import", "reasoning-teacher", "--dataset", "sqa", "--file", recorded, db=db)
    assert doc["imported"] == 2290
    requests = tmp_path / "requests.jsonl"
    doc, _ = cli("teacher", "batch-export", "--config", config, "--out", requests, db=db)
    assert doc["requests"] == 4
    lines = [json.loads(line) for line in requests.read_text().splitlines()]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(_ok_line(r, "So the answer is yes.", n)) + "\n" for n, r in enumerate(lines)))
    doc, _ = cli("teacher", "batch-import", "--job", doc["job"], "--file", results, db=db)
    assert doc["stored"] == 4
    doc, _ = cli("teacher", "jobs", db=db)
    assert len(doc["jobs"]) == 2

    engine = open_workspace(db)
    try:
        with session_scope(engine) as s:
            evaluation = s.exec(select(Evaluation.id)).first()
    finally:
        engine.dispose()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = ["teacher", "judge", "--eval", evaluation, "--base-url", url, "--model", "judge"]
        doc, _ = cli(*judge, db=db)
        assert doc["scored"] == doc["n"] == 2 and doc["coherence"] == 5
        cli("teacher", "judge", "--eval", 999, "--base-url", url, "--model", "judge", db=db, code=2)
    finally:
        server.shutdown()
        server.server_close()
    cli("teacher", "batch-import", "--job", 999, "--file", results, db=db, code=2)
    cli("teacher", "import", "reasoning-teacher", "--dataset", "nope", "--file", recorded, db=db, code=2)


def test_workspace_merge(workspace, tmp_path: Path) -> None:
    doc, _ = cli("workspace", "merge", workspace["db"], "--into", tmp_path / "merged.db")
    # into a new workspace every row of the source is new: the counts are the source's tables
    assert doc == _row_counts(workspace["db"], list(doc)) and list(doc)[:3] == ["datasets", "questions", "jobs"]
    assert (doc["datasets"], doc["questions"]) == (1, 2290)  # StrategyQA, imported once
    cli("workspace", "merge", tmp_path / "missing.db", "--into", tmp_path / "m2.db", code=2)


# -- failures of every command ----------------------------------------------------------------------------------
def _argv_for(command: tuple[str, ...], tmp_path: Path, config: Path) -> list[Any]:
    """The command with its required arguments, all well formed (the workspace is what is wrong)."""
    required = {
        ("run",): [config, "--stage", "sample"],
        ("study",): [config, "--datasets", "sqa", "--seeds", "0"],
        ("data", "import", "reasoning-teacher"): ["--name", "x", "--dataset", rt_files("strategy_qa")[0]]
        + ["--split", rt_files("strategy_qa")[1]],
        ("data", "import", "jsonl"): ["--name", "x", "--file", config],
        ("data", "import", "hf"): ["--name", "x", "--path", tmp_path],
        ("data", "generate"): ["basic_arithmetic", "--train", 1, "--test", 1],
        ("paths", "list"): ["--job", 1],
        ("paths", "reject-duplicates"): ["--job", 1],
        ("report", "filters"): ["--job", 1],
        ("report", "coverage"): ["--job", 1],
        ("export", "set"): [config, "--stage", "finetune", "--out", tmp_path / "out.jsonl"],
        ("export", "paths"): ["--job", 1, "--out", tmp_path / "out.jsonl"],
        ("teacher", "import", "reasoning-teacher"): ["--dataset", "sqa", "--file", config],
        ("teacher", "batch-export"): ["--job", 1, "--out", tmp_path / "out.jsonl"],
        ("teacher", "batch-import"): ["--job", 1, "--file", config],
        ("teacher", "judge"): ["--eval", 1, "--base-url", "http://127.0.0.1:9/v1", "--model", "m"],
    }
    return [*command, *required.get(command, [])]


@pytest.mark.parametrize("command", sorted(TESTED), ids=" ".join)
def test_failures_are_one_json_document(command: tuple[str, ...], tmp_path: Path) -> None:
    """Every --json command on a file that is not a workspace: exit 2, one error line, one document."""
    garbage = tmp_path / "not-a-workspace.db"
    garbage.write_text("this is not SQLite\n" * 10)
    config = tmp_path / "c.toml"
    config.write_text('[data]\ndataset = "sqa"\n')
    if command == ("workspace", "merge"):
        argv: list[Any] = [*command, garbage, "--into", tmp_path / "merged.db"]
        doc, _ = cli(*argv, code=2)
    else:
        doc, _ = cli(*_argv_for(command, tmp_path, config), db=garbage, code=2)
    assert set(doc) <= {"error", "jobs"}


def test_a_usage_error_is_one_json_document(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["jobs", "list", "--json", "--no-such-flag"])
    out = capsys.readouterr()
    assert info.value.code == 2
    assert json.loads(out.out) == {"error": "sert-tui: unrecognized arguments: --no-such-flag"}
    assert "unrecognized arguments: --no-such-flag" in out.err


def test_every_json_command_is_tested() -> None:
    assert json_commands() == set(TESTED)
