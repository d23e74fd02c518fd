"""OpenAI Batch API round trip without network: export a teacher job's requests, write an output file in the
Batch API's documented shape, import it; failed lines fail their question, a second round finishes the job."""

from __future__ import annotations

import json

from sqlalchemy import func
from sqlmodel import select

from db.models import Job, JobItem, Path, TeacherResponse
from db.queries import split_questions
from db.session import session_scope
from engine.teacher.store import teacher_prompt
from sert_tui.cli import main

CONFIG = """
[data]
dataset = "sqa"
train_limit = 3

[teacher]
base_url = "https://api.openai.com/v1"
model = "gpt-4o-mini"
api = "chat"
temperature = 0.7
max_tokens = 64
samples = 2
price_input_per_m = 1.0
price_output_per_m = 4.0
"""


def _ok_line(request: dict, text: str, n: int) -> dict:
    return {
        "id": f"batch_req_{n}",
        "custom_id": request["custom_id"],
        "response": {
            "status_code": 200,
            "request_id": f"req_{n}",
            "body": {
                "id": f"chatcmpl-{n}",
                "object": "chat.completion",
                "model": request["body"]["model"],
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30},
            },
        },
        "error": None,
    }


def _error_line(request: dict, n: int) -> dict:
    return {
        "id": f"batch_req_{n}",
        "custom_id": request["custom_id"],
        "response": {
            "status_code": 500,
            "request_id": f"req_{n}",
            "body": {"error": {"message": "The server had an error", "type": "server_error"}},
        },
        "error": None,
    }


def _write(path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")


def test_batch_export_import_round_trip(sqa, engine, db_path, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # no key and no network needed
    cfg = tmp_path / "batch.toml"
    cfg.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "requests.jsonl"
    base = ["--db", str(db_path), "teacher"]

    assert main([*base, "batch-export", "--config", str(cfg), "--out", str(out), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert exported["requests"] == 6 and exported["questions"] == 3
    job_id = exported["job"]
    requests = [json.loads(line) for line in out.read_text().splitlines()]
    with session_scope(engine) as s:
        questions = split_questions(s, sqa.id, "train", 3)
    assert [r["custom_id"] for r in requests] == [f"job{job_id}-q{q.id}-s{k}" for q in questions for k in (0, 1)]
    first = requests[0]
    assert first["method"] == "POST" and first["url"] == "/v1/chat/completions"
    assert first["body"] == {
        "model": "gpt-4o-mini",
        "temperature": 0.7,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": teacher_prompt(questions[0].text)}],
    }

    # An existing file is not overwritten without --force.
    assert main([*base, "batch-export", "--job", str(job_id), "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    # Round 1: question 0 both samples, question 1 one sample plus a failed line, question 2 nothing.
    gold = [q.answer for q in questions]
    results = tmp_path / "results.jsonl"
    _write(
        results,
        [
            _ok_line(requests[0], f"Step one. Therefore, the answer is {gold[0]}.", 0),
            _ok_line(requests[1], "I am not sure. Therefore, the answer is maybe.", 1),
            _ok_line(requests[2], f"So the answer is {gold[1]}.", 2),
            _error_line(requests[3], 3),
        ],
    )
    assert main([*base, "batch-import", "--job", str(job_id), "--file", str(results), "--json"]) == 0
    r1 = json.loads(capsys.readouterr().out)
    assert (r1["stored"], r1["answered"], r1["failed"], r1["open"]) == (3, 1, 1, 1)
    assert r1["status"] == "pending"
    with session_scope(engine) as s:
        paths = s.exec(select(Path).where(Path.job_id == job_id).order_by(Path.sample)).all()
        assert [(p.question_id, p.sample, p.source) for p in paths] == [
            (questions[0].id, 0, "teacher"),
            (questions[0].id, 1, "teacher"),
        ]
        assert paths[0].correct is True and paths[0].answer == gold[0] and paths[0].tokens == 10
        assert paths[1].correct is False and paths[1].answer is None
        item = s.exec(select(JobItem).where(JobItem.job_id == job_id, JobItem.question_id == questions[1].id)).one()
        assert item.status == "failed" and "HTTP 500" in item.reason
        assert s.exec(select(func.count(TeacherResponse.id))).one() == 3

    # Round 2: only what is still missing is exported (question 1 sample 0 is cached).
    out2 = tmp_path / "requests2.jsonl"
    assert main([*base, "batch-export", "--job", str(job_id), "--out", str(out2), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    requests2 = [json.loads(line) for line in out2.read_text().splitlines()]
    assert second["cached"] == 1
    assert [r["custom_id"] for r in requests2] == [
        f"job{job_id}-q{questions[1].id}-s1",
        f"job{job_id}-q{questions[2].id}-s0",
        f"job{job_id}-q{questions[2].id}-s1",
    ]
    results2 = tmp_path / "results2.jsonl"
    _write(results2, [_ok_line(r, f"Therefore, the answer is {gold[1]}.", 10 + i) for i, r in enumerate(requests2)])
    assert main([*base, "batch-import", "--job", str(job_id), "--file", str(results2), "--json"]) == 0
    r2 = json.loads(capsys.readouterr().out)
    assert (r2["answered"], r2["failed"], r2["open"], r2["status"]) == (2, 0, 0, "completed")
    with session_scope(engine) as s:
        job = s.get(Job, job_id)
        assert job.status == "completed"
        assert job.summary["answered"] == 3 and job.summary["failed"] == 0 and job.summary["rationales"] == 6
        assert job.summary["prompt_tokens"] == 6 * 20 and job.summary["completion_tokens"] == 6 * 10
        # Batch API: half of (120 * $1 + 60 * $4) per 1M tokens.
        assert abs(job.summary["cost_usd"] - 0.5 * (120 * 1.0 + 60 * 4.0) / 1e6) < 1e-9
        assert s.exec(select(func.count(Path.id)).where(Path.job_id == job_id)).one() == 6

    # A result line of another job is refused with one line.
    stray = tmp_path / "stray.jsonl"
    _write(stray, [{**_ok_line(requests[0], "x", 99), "custom_id": "job999-q1-s0"}])
    assert main([*base, "batch-import", "--job", str(job_id), "--file", str(stray)]) == 2
    assert "belongs to job 999" in capsys.readouterr().err
