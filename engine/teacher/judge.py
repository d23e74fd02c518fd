"""The optional judge: scores the reasoning of an evaluation's outputs on coherence, relevance, logical
consistency and completeness (0-10 each) through the teacher's client (cache, retries, concurrency).

Each prediction gets ``scores["judge"] = {criterion: value, ...}`` (or ``None`` with ``scores["judge_error"]``
when the reply could not be read or the request failed); the evaluation gets ``scores["judge"]`` with the
means over the outputs that were scored, how many were and were not, and the judge model.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from db.errors import UserError
from db.models import Evaluation, Prediction, Question
from db.session import session_scope
from engine.config import JudgeConfig
from engine.prompts import judge_prompt
from engine.teacher.cache import ResponseCache
from engine.teacher.client import Endpoint, RequestFailed, TeacherClient, TeacherRequest, first_error

CRITERIA = ("coherence", "relevance", "logical_consistency", "completeness")
_ALIASES = {
    "coherence": "coherence",
    "coherent": "coherence",
    "relevance": "relevance",
    "relevant": "relevance",
    "logical_consistency": "logical_consistency",
    "logic": "logical_consistency",
    "logical": "logical_consistency",
    "consistency": "logical_consistency",
    "completeness": "completeness",
    "complete": "completeness",
}
_NUMBER = r"(-?\d+(?:\.\d+)?)"


def _key(name: str) -> str | None:
    norm = re.sub(r"[^a-z]+", "_", name.lower()).strip("_")
    return _ALIASES.get(norm)


def _clamp(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        m = re.search(_NUMBER, value)
        if m is None:
            return None
        value = m.group(1)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return min(max(number, 0.0), 10.0)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every JSON object that can be decoded from a position of ``text`` (code fences and prose around)."""
    decoder = json.JSONDecoder()
    found = []
    for m in re.finditer(r"\{", text):
        try:
            obj, _end = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


def parse_judge_reply(text: str) -> dict[str, float] | None:
    """The four scores in a judge's reply (JSON, or "Coherence: 7/10"-style lines); None unless all four."""
    for obj in _json_objects(text):
        scores: dict[str, float] = {}
        stack = [obj]
        while stack:
            current = stack.pop()
            for name, value in current.items():
                if isinstance(value, dict):
                    stack.append(value)
                    continue
                key = _key(str(name))
                number = _clamp(value)
                if key is not None and number is not None and key not in scores:
                    scores[key] = number
        if all(c in scores for c in CRITERIA):
            return {c: scores[c] for c in CRITERIA}
    scores = {}
    for m in re.finditer(
        r"(logical[\s_-]*consistency|coherence|relevance|completeness)\W{0,6}?" + _NUMBER, text, re.IGNORECASE
    ):
        key = _key(m.group(1))
        if key is not None and key not in scores:
            number = _clamp(m.group(2))
            if number is not None:
                scores[key] = number
    if all(c in scores for c in CRITERIA):
        return {c: scores[c] for c in CRITERIA}
    return None


def judge_evaluation(
    database: Engine,
    evaluation_id: int,
    cfg: JudgeConfig,
    echo: Callable[[str], None] | None = None,
    *,
    rejudge: bool = False,
) -> dict[str, Any]:
    """Score the predictions of an evaluation (the first ``cfg.limit``); returns the evaluation's judge scores."""
    echo = echo or (lambda _line: None)
    if not cfg.base_url or not cfg.model:
        raise UserError("judge.base_url and judge.model must be set to use the judge")
    with session_scope(database) as s:
        evaluation = s.get(Evaluation, evaluation_id)
        if evaluation is None:
            raise UserError(f"no evaluation {evaluation_id} in this workspace")
        stmt = (
            select(Prediction, Question)
            .join(Question, Question.id == Prediction.question_id)
            .where(Prediction.evaluation_id == evaluation_id)
            .order_by(Prediction.id)
        )
        if cfg.limit is not None:
            stmt = stmt.limit(cfg.limit)
        rows = [(p, q) for p, q in s.exec(stmt).all()]
    endpoint = Endpoint.from_config(cfg, "judge")
    todo = [(p, q) for p, q in rows if rejudge or "judge" not in (p.scores or {})]
    echo(f"judge: {len(rows)} outputs of evaluation {evaluation_id}, {len(todo)} to score with {cfg.model}")

    async def run() -> list[tuple[int, dict[str, float] | None, str]]:
        client = TeacherClient(endpoint, ResponseCache(database), log=echo)
        results: list[tuple[int, dict[str, float] | None, str]] = []

        async def one(p: Prediction, q: Question) -> None:
            request = TeacherRequest(judge_prompt(q.text, q.answer, p.output), cfg.temperature, cfg.max_tokens)
            try:
                reply = await client.complete(request)
            except RequestFailed as exc:
                results.append((p.id, None, exc.reason))  # type: ignore[arg-type]
                return
            scores = parse_judge_reply(reply.text)
            results.append((p.id, scores, "" if scores else "unreadable judge reply"))  # type: ignore[arg-type]
            echo(f"judge: {len(results)}/{len(todo)}")

        async with client:
            try:
                async with asyncio.TaskGroup() as group:
                    for p, q in todo:
                        group.create_task(one(p, q))
            except BaseExceptionGroup as eg:
                raise first_error(eg) from None
        return results

    results = asyncio.run(run()) if todo else []
    with session_scope(database) as s:
        for pid, scores, error in results:
            pred = s.get(Prediction, pid)
            assert pred is not None
            new = {k: v for k, v in (pred.scores or {}).items() if k not in ("judge", "judge_error")}
            new["judge"] = scores
            if error:
                new["judge_error"] = error
            pred.scores = new
            s.add(pred)
        s.flush()
        judged = [
            p.scores.get("judge")
            for p in s.exec(select(Prediction).where(Prediction.evaluation_id == evaluation_id)).all()
            if "judge" in (p.scores or {})
        ]
        scored = [j for j in judged if j]
        summary: dict[str, Any] = {
            "model": cfg.model,
            "n": len(judged),
            "scored": len(scored),
            "missing": len(judged) - len(scored),
        }
        for c in CRITERIA:
            summary[c] = round(sum(j[c] for j in scored) / len(scored), 4) if scored else None
        evaluation = s.get(Evaluation, evaluation_id)
        assert evaluation is not None
        evaluation.scores = {**(evaluation.scores or {}), "judge": summary}
        s.add(evaluation)
    return {"evaluation": evaluation_id, **summary}
