"""Teacher pieces that need no model server: answer parsing, back-off, Retry-After, cache keys, the API key
rules, the judge's reply parser, and the one-line errors for bad credentials, a wrong URL and an unreachable
server (a real fault proxy / a closed port on 127.0.0.1)."""

from __future__ import annotations

import random
from email.utils import formatdate

import pytest

from db.errors import UserError
from engine.answers import parse_answer as parse_teacher_answer
from engine.teacher.client import (
    NO_KEY_PLACEHOLDER,
    Endpoint,
    TeacherRequest,
    backoff_delay,
    cache_key,
    is_loopback,
    resolve_api_key,
    retry_after_seconds,
)
from engine.teacher.judge import parse_judge_reply
from sert_tui.cli import main
from tests.teacher_server import FaultProxy, free_port


# -- parsing -------------------------------------------------------------------------------------------------
def test_teacher_answer_follows_fine_tune_cot():
    assert parse_teacher_answer("Therefore, the answer is no.", "yes_no") == "no"
    assert parse_teacher_answer("Therefore, the answer is both yes and no.", "yes_no") == "yes"
    # The reference evaluator does not split on "!": "yes!" is no answer (this gives the published 856).
    assert parse_teacher_answer("Therefore, the answer is yes!", "yes_no") is None
    assert parse_teacher_answer("Yes, it can. No doubt. So no", "yes_no") == "no"  # no marker: last candidate
    assert parse_teacher_answer("Therefore, the answer is (B).", "choice", "ABCDE") == "B"
    assert parse_teacher_answer("5 + 7 = 12. Therefore, the answer is 1,200.", "number") == "1200"


def test_request_bodies_and_cache_keys():
    chat = Endpoint("http://127.0.0.1:9/v1", "m", "chat")
    comp = Endpoint("http://127.0.0.1:9/v1/", "m", "completions")
    r0 = TeacherRequest("Question: q. Answer: Let's think step by step.", 0.7, 16, sample=0)
    r1 = TeacherRequest(r0.prompt, 0.7, 16, sample=1)
    assert r0.body("m", "chat") == {
        "model": "m",
        "temperature": 0.7,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": r0.prompt}],
    }
    assert r0.body("m", "completions")["prompt"] == r0.prompt
    assert chat.path == "/v1/chat/completions" and comp.path == "/v1/completions"
    assert r0.cache_key(chat) != r1.cache_key(chat)  # samples stay apart
    assert r0.cache_key(chat) != r0.cache_key(Endpoint(chat.base_url, "m", "completions"))
    assert cache_key("http://h/v1/", "m", "chat", "p", {}) == cache_key("http://h/v1", "m", "chat", "p", {})
    assert cache_key("http://h/v1", "m", "chat", "p", {}) != cache_key("http://h/v1", "m2", "chat", "p", {})


# -- back-off ------------------------------------------------------------------------------------------------
def test_backoff_is_exponential_jittered_capped_and_honours_retry_after():
    rng = random.Random(0)
    for attempt in range(1, 8):
        ceiling = min(30.0, 1.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, 1.0, 30.0, None, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.7 * ceiling  # jitter spreads over the whole range
        assert len(set(delays)) > 150
    assert all(backoff_delay(1, 0.1, 30.0, 7.0, rng) >= 7.0 for _ in range(50))
    assert backoff_delay(1, 0.1, 30.0, 7.0, rng) < 7.2
    assert backoff_delay(1, 0.1, 30.0, 10_000.0, rng) <= 300.2  # a huge Retry-After is capped


def test_retry_after_forms():
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    later = retry_after_seconds({"retry-after": formatdate(timeval=__import__("time").time() + 20, usegmt=True)})
    assert later is not None and 15 <= later <= 21
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({}) is None


# -- API key -------------------------------------------------------------------------------------------------
def test_api_key_from_environment_only(monkeypatch):
    monkeypatch.delenv("SERT_TEST_KEY", raising=False)
    assert is_loopback("http://127.0.0.1:8000/v1") and is_loopback("http://localhost/v1")
    assert is_loopback("http://[::1]:8000/v1") and not is_loopback("https://api.openai.com/v1")
    local = Endpoint("http://127.0.0.1:8000/v1", "m", api_key_env="SERT_TEST_KEY")
    assert resolve_api_key(local) == NO_KEY_PLACEHOLDER
    remote = Endpoint("https://api.openai.com/v1", "m", api_key_env="SERT_TEST_KEY")
    with pytest.raises(UserError, match="SERT_TEST_KEY"):
        resolve_api_key(remote)
    monkeypatch.setenv("SERT_TEST_KEY", "sk-from-env")
    assert resolve_api_key(remote) == "sk-from-env"


# -- judge reply parser --------------------------------------------------------------------------------------
def test_judge_reply_parser():
    full = {"coherence": 7.0, "relevance": 8.0, "logical_consistency": 6.0, "completeness": 5.0}
    assert parse_judge_reply('{"coherence": 7, "relevance": 8, "logical_consistency": 6, "completeness": 5}') == full
    fenced = 'Sure!\n```json\n{"Coherence": "7/10", "Relevance": 8, "Logical consistency": 6, "Completeness": 5}\n```'
    assert parse_judge_reply(fenced) == full
    nested = '{"scores": {"coherence": 7, "relevance": 8, "logical_consistency": 6, "completeness": 5}, "note": "x"}'
    assert parse_judge_reply(nested) == full
    prose = "Coherence: 7/10\nRelevance - 8\nLogical consistency: 6\nCompleteness: 5 out of 10"
    assert parse_judge_reply(prose) == full
    assert parse_judge_reply('{"coherence": 14, "relevance": -2, "logical_consistency": 6, "completeness": 5}') == {
        "coherence": 10.0,
        "relevance": 0.0,
        "logical_consistency": 6.0,
        "completeness": 5.0,
    }
    assert parse_judge_reply('{"coherence": 7, "relevance": 8}') is None  # incomplete: missing, not guessed
    assert parse_judge_reply("The reasoning is fine.") is None
    assert parse_judge_reply("") is None


# -- one-line errors through the CLI -------------------------------------------------------------------------
def _config(tmp_path, base_url: str, key_env: str = "SERT_TEST_KEY", extra: str = "") -> str:
    path = tmp_path / "teacher.toml"
    path.write_text(
        f"""
[data]
dataset = "sqa"
train_limit = 3

[teacher]
base_url = "{base_url}"
model = "teacher-model"
api_key_env = "{key_env}"
max_tokens = 8
timeout = 10
max_attempts = 3
retry_base_delay = 0.05
{extra}
""",
        encoding="utf-8",
    )
    return str(path)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


def test_unreachable_url_stops_at_once(sqa, db_path, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SERT_TEST_KEY", raising=False)
    port = free_port()  # nothing listens there
    rc = main(["--db", str(db_path), "run", _config(tmp_path, f"http://127.0.0.1:{port}/v1"), "--stage", "teacher"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert f"cannot connect to http://127.0.0.1:{port}/v1" in line and "teacher.base_url" in line


def test_bad_credentials_stop_at_once_without_showing_the_key(sqa, db_path, tmp_path, capsys, monkeypatch):
    wrong = "sk-wrong-" + "7" * 24
    monkeypatch.setenv("SERT_TEST_KEY", wrong)
    with FaultProxy(None, require_key="sk-right-key") as proxy:
        rc = main(["--db", str(db_path), "run", _config(tmp_path, proxy.base_url), "--stage", "teacher"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert "HTTP 401" in line and "SERT_TEST_KEY" in line and wrong not in line
    assert 1 <= proxy.received <= 3  # no retries: at most the requests already in flight
    assert proxy.forwarded == 0


def test_wrong_endpoint_404_stops_at_once(sqa, db_path, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SERT_TEST_KEY", raising=False)
    with FaultProxy(None, rules={"": "404"}) as proxy:
        rc = main(["--db", str(db_path), "run", _config(tmp_path, proxy.base_url), "--stage", "teacher"])
    assert rc == 2
    line = _one_error_line(capsys)
    assert "404" in line and "teacher.base_url" in line
    assert proxy.received <= 3


def test_missing_key_for_a_remote_teacher(sqa, db_path, tmp_path, capsys, monkeypatch, engine):
    monkeypatch.delenv("SERT_TEST_KEY", raising=False)
    cfg = _config(tmp_path, "https://api.example.invalid/v1")
    assert main(["--db", str(db_path), "run", cfg, "--stage", "teacher"]) == 2
    line = _one_error_line(capsys)
    assert "SERT_TEST_KEY" in line and "not set" in line
    from sqlmodel import select

    from db.models import Job
    from db.session import session_scope

    with session_scope(engine) as s:
        assert s.exec(select(Job).where(Job.kind == "teacher")).first() is None  # refused before any job


def test_teacher_stage_without_endpoint_or_recorded_rationales(sqa, db_path, tmp_path, capsys):
    assert main(["--db", str(db_path), "run", _config(tmp_path, ""), "--stage", "teacher"]) == 2
    assert "teacher.base_url is empty" in _one_error_line(capsys)
