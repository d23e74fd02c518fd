"""The teacher against a real OpenAI-compatible server: ``transformers serve`` on the bundled student, started
once for this module on 127.0.0.1, with a real fault-injecting proxy in front of it.

Requests are kept tiny (a few questions, 8 new tokens) because the server generates on a shared 2-core CPU;
the module still takes about 1.5-2 minutes there (server start included), hence the ``slow`` mark.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path as FsPath

import pytest
from sqlalchemy import func
from sqlmodel import delete, select

from db.models import Evaluation, Job, JobItem, Path, Prediction, Question, TeacherResponse
from db.queries import split_questions
from db.session import session_scope
from engine.config import config_from_dict
from engine.jobs import create_job
from engine.pipeline import run_stage
from sert_tui.cli import main
from tests.teacher_server import FaultProxy, transformers_serve

pytestmark = [pytest.mark.model, pytest.mark.slow]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base_url, model name) of a ``transformers serve`` process on the bundled student."""
    from engine.models import prepare_model

    model_dir = prepare_model("default")
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with transformers_serve(model_dir, log) as base_url:
        yield base_url, str(model_dir)


def _teacher(base_url: str, model: str, **overrides) -> dict:
    teacher = {
        "base_url": base_url,
        "model": model,
        "max_tokens": 8,
        "timeout": 60,
        "concurrency": 2,
        "max_attempts": 6,
        "retry_base_delay": 0.05,
        "retry_max_delay": 1.0,
        "price_input_per_m": 0.5,
        "price_output_per_m": 1.5,
    }
    teacher.update(overrides)
    return teacher


def _config(base_url: str, model: str, limit: int = 3, **overrides):
    return config_from_dict(
        {"data": {"dataset": "sqa", "train_limit": limit}, "teacher": _teacher(base_url, model, **overrides)}
    )


def _counts(engine, job_id: int) -> tuple[int, int, dict[str, int]]:
    with session_scope(engine) as s:
        n_paths = s.exec(select(func.count(Path.id)).where(Path.job_id == job_id)).one()
        distinct = s.exec(
            select(func.count(func.distinct(Path.question_id))).where(Path.job_id == job_id, Path.source == "teacher")
        ).one()
        items = dict(
            s.exec(select(JobItem.status, func.count()).where(JobItem.job_id == job_id).group_by(JobItem.status)).all()
        )
    return n_paths, distinct, items


def test_stage_end_to_end_through_the_cli_and_the_key_is_never_written(
    served, sqa, engine, db_path, tmp_path, capsys, monkeypatch
):
    base_url, model = served
    key = "sk-test-" + secrets.token_hex(16)
    monkeypatch.setenv("SERT_TEACHER_KEY", key)
    with FaultProxy(base_url, require_key=key) as proxy:
        cfg = tmp_path / "teacher.toml"
        cfg.write_text(
            f"""
[data]
dataset = "sqa"
train_limit = 2

[teacher]
base_url = "{proxy.base_url}"
model = "{model}"
api_key_env = "SERT_TEACHER_KEY"
temperature = 0.8
samples = 2
max_tokens = 8
concurrency = 4
price_input_per_m = 0.5
price_output_per_m = 1.5
""",
            encoding="utf-8",
        )
        argv = ["--db", str(db_path), "run", str(cfg), "--stage", "teacher", "--json"]
        assert main(argv) == 0
        first = capsys.readouterr()
        job_id = json.loads(first.out)["jobs"][0]["id"]
        assert proxy.received == 4 and proxy.forwarded == 4  # 2 questions x 2 samples, the key accepted

        with session_scope(engine) as s:
            job = s.get(Job, job_id)
            assert job.status == "completed" and job.kind == "teacher"
            summary = job.summary
            paths = s.exec(select(Path).where(Path.job_id == job_id).order_by(Path.question_id, Path.sample)).all()
            questions = {q.id: q for q in split_questions(s, sqa.id, "train", 2)}
        assert summary["requests"] == 4 and summary["answered"] == 2 and summary["failed"] == 0
        assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] == 4 * 8
        expected = (summary["prompt_tokens"] * 0.5 + summary["completion_tokens"] * 1.5) / 1e6
        assert abs(summary["cost_usd"] - expected) < 1e-6
        assert [(p.question_id, p.sample) for p in paths] == [(q, k) for q in questions for k in (0, 1)]
        for p in paths:
            assert p.source == "teacher" and p.branch == 0 and p.text and p.tokens == 8
            assert p.correct is (p.answer == questions[p.question_id].answer)
        assert "$" in job.message and "req/s" in job.message  # progress line with rate and cost

        # Re-running sends nothing: the job is complete (and every reply is cached).
        proxy.reset()
        assert main(argv) == 0
        assert proxy.received == 0
        rerun = capsys.readouterr()

        # Teacher job listing and a Batch API export of the same config write files too.
        assert main(["--db", str(db_path), "teacher", "jobs", "--json"]) == 0
        listing = capsys.readouterr()
        assert json.loads(listing.out)["jobs"][0]["cost_usd"] == summary["cost_usd"]
        export = tmp_path / "batch.jsonl"
        assert main(["--db", str(db_path), "teacher", "batch-export", "--config", str(cfg), "--out", str(export)]) == 0
        exported = capsys.readouterr()

    # The key appears nowhere the tool wrote: workspace (+ WAL, SHM), export, output and logs.
    needle = key.encode()
    written = [db_path, FsPath(f"{db_path}-wal"), FsPath(f"{db_path}-shm"), export]
    found = [str(f) for f in written if f.exists() and needle in f.read_bytes()]
    assert found == []
    assert db_path.exists() and export.exists()
    for captured in (first, rerun, listing, exported):
        assert key not in captured.out and key not in captured.err
    with session_scope(engine) as s:
        rows = s.exec(select(Job)).all()
        assert all(key not in json.dumps(r.model_dump(), default=str) for r in rows)


def test_completions_api(served, sqa, engine):
    base_url, model = served
    cfg = _config(base_url, model, limit=1, api="completions")
    job = run_stage(engine, cfg, "teacher", lambda _l: None)[0]
    assert job.status == "completed" and job.summary["answered"] == 1
    with session_scope(engine) as s:
        path = s.exec(select(Path).where(Path.job_id == job.id)).one()
    assert path.source == "teacher" and path.text and path.tokens == 8


def test_faults_every_question_once_cache_and_resume(served, sqa, engine):
    base_url, model = served
    schedule = ["429", "500", "drop", "slow"]
    with FaultProxy(base_url, schedule, retry_after="1", slow_s=7.0) as proxy:
        cfg = _config(proxy.base_url, model, limit=3, timeout=6, concurrency=2)
        t0 = time.monotonic()
        job = run_stage(engine, cfg, "teacher", lambda _l: None)[0]
        elapsed = time.monotonic() - t0
        assert job.status == "completed"
        assert proxy.actions[:4] == schedule and proxy.forwarded >= 3
        assert job.summary["retries"] >= 4 and job.summary["failed"] == 0
        n_paths, distinct, items = _counts(engine, job.id)
        assert (n_paths, distinct, items) == (3, 3, {"done": 3})  # every question answered exactly once
        assert elapsed < 120

        # A crash after the reply was cached but before the question was written: the resumed job gets the
        # reply from the cache and sends nothing.
        with session_scope(engine) as s:
            qid = s.exec(select(Path.question_id).where(Path.job_id == job.id)).first()
            s.exec(delete(Path).where(Path.job_id == job.id, Path.question_id == qid))
            s.exec(delete(JobItem).where(JobItem.job_id == job.id, JobItem.question_id == qid))
            s.get(Job, job.id).status = "running"
        proxy.reset()
        again = run_stage(engine, cfg, "teacher", lambda _l: None)[0]
        assert again.id == job.id and again.status == "completed"
        assert proxy.received == 0
        assert _counts(engine, job.id) == (3, 3, {"done": 3})
        assert again.summary["cache_hits"] >= 1


def test_failed_question_is_marked_and_only_it_is_retried(served, sqa, engine):
    base_url, model = served
    with session_scope(engine) as s:
        target = split_questions(s, sqa.id, "train", 3)[1]
    needle = json.dumps(target.text)[1:-12]  # a piece of the question as it appears in the JSON body
    with FaultProxy(base_url, rules={needle: "500"}) as proxy:
        cfg = _config(proxy.base_url, model, limit=3, max_attempts=2)
        job = run_stage(engine, cfg, "teacher", lambda _l: None)[0]
        assert job.status == "completed" and job.summary["failed"] == 1 and job.summary["answered"] == 2
        with session_scope(engine) as s:
            item = s.exec(select(JobItem).where(JobItem.job_id == job.id, JobItem.question_id == target.id)).one()
        assert item.status == "failed" and "HTTP 500" in item.reason and "after 2 attempts" in item.reason
        assert _counts(engine, job.id)[:2] == (2, 2)

        proxy.reset()  # the server recovers; a later run asks only for the failed question
        again = run_stage(engine, cfg, "teacher", lambda _l: None)[0]
        assert again.id == job.id and again.status == "completed" and again.summary["failed"] == 0
        assert proxy.received == 1 and proxy.forwarded == 1
        assert _counts(engine, job.id) == (3, 3, {"done": 3})


def test_judge_scores_an_evaluation(served, sqa, engine):
    from engine.config import JudgeConfig
    from engine.teacher.judge import CRITERIA, judge_evaluation

    base_url, model = served
    with session_scope(engine) as s:
        questions = s.exec(
            select(Question).where(Question.dataset_id == sqa.id, Question.split == "test").limit(2)
        ).all()
    job = create_job(engine, "eval", {}, dataset_id=sqa.id)
    with session_scope(engine) as s:
        ev = Evaluation(job_id=job.id, dataset_id=sqa.id, split="test", label="zero-shot", n=2)
        s.add(ev)
        s.flush()
        for q in questions:
            s.add(Prediction(evaluation_id=ev.id, question_id=q.id, output="It is so. So the answer is yes."))
        eval_id = ev.id
    with FaultProxy(base_url) as proxy:
        cfg = JudgeConfig(base_url=proxy.base_url, model=model, max_tokens=12, timeout=60)
        result = judge_evaluation(engine, eval_id, cfg)
        assert proxy.forwarded == 2
        assert result["n"] == 2 and result["scored"] + result["missing"] == 2
        with session_scope(engine) as s:
            preds = s.exec(select(Prediction).where(Prediction.evaluation_id == eval_id)).all()
            stored = s.get(Evaluation, eval_id).scores["judge"]
        for p in preds:
            judged = p.scores["judge"]
            assert judged is None or set(judged) == set(CRITERIA)
            assert judged is not None or p.scores["judge_error"] == "unreadable judge reply"
        assert stored["n"] == 2 and stored["model"] == model
        # Judged again (rejudge): every reply comes from the cache.
        proxy.reset()
        judge_evaluation(engine, eval_id, cfg, rejudge=True)
        assert proxy.received == 0


def test_kill_9_mid_run_then_resume(served, sqa, engine, db_path, tmp_path):
    """A real ``kill -9`` of the CLI while it asks the teacher: the next run finishes the job, re-asks only
    what was not yet cached, and writes every question exactly once."""
    import os
    import signal
    import subprocess
    import sys

    base_url, model = served
    with FaultProxy(base_url) as proxy:
        cfg = tmp_path / "teacher.toml"
        cfg.write_text(
            f'[data]\ndataset = "sqa"\ntrain_limit = 3\n\n[teacher]\nbase_url = "{proxy.base_url}"\n'
            f'model = "{model}"\nmax_tokens = 8\nconcurrency = 1\n',
            encoding="utf-8",
        )
        cmd = [sys.executable, "-m", "sert_tui", "--db", str(db_path), "run", str(cfg), "--stage", "teacher"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=FsPath.cwd())
        deadline = time.monotonic() + 120
        done_at_kill = 0
        while time.monotonic() < deadline and proc.poll() is None:
            with session_scope(engine) as s:
                done_at_kill = s.exec(select(func.count(JobItem.id))).one()
            if done_at_kill >= 1:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 1 <= done_at_kill < 3, "the run should be killed part-way"
        with session_scope(engine) as s:
            done_at_kill = s.exec(select(func.count(JobItem.id))).one()
            cached = s.exec(select(func.count(TeacherResponse.id))).one()
        sent_before = proxy.forwarded
        proxy.reset()

        job = run_stage(engine, _config(proxy.base_url, model, limit=3, concurrency=1), "teacher", lambda _l: None)[0]
        assert job.status == "completed"
        assert _counts(engine, job.id) == (3, 3, {"done": 3})
        assert proxy.received == 3 - cached  # nothing that succeeded before the kill is asked again
        assert sent_before >= done_at_kill
