"""The OpenAI Batch API: export a teacher job's open requests as a JSONL input file, import the output file.

Input line: ``{"custom_id": "job<J>-q<Q>-s<S>", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
with the same body the online stage sends. Output line (what the Batch API returns):
``{"id", "custom_id", "response": {"status_code", "request_id", "body": {...}}, "error": null | {...}}``.
Imported replies go into the response cache and become teacher paths exactly like online ones; a question
whose every sample is in is marked done, one with a failed line is marked failed with the reason. When no
question is left open the job is completed. The Batch API bills half price: the estimated cost uses
``BATCH_PRICE_FACTOR``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from db.errors import UserError
from db.models import Dataset, Job, Question
from db.paths_repo import done_question_ids
from db.queries import split_questions
from db.session import session_scope
from engine.config import ExperimentConfig, config_from_dict
from engine.files import new_file, refuse_existing
from engine.jobs import JobContext, create_job
from engine.teacher import store
from engine.teacher.cache import ResponseCache
from engine.teacher.client import RequestFailed, TeacherRequest, reply_from_body
from engine.teacher.stage import cost_usd

BATCH_PRICE_FACTOR = 0.5
_CUSTOM_ID_RE = re.compile(r"^job(\d+)-q(\d+)-s(\d+)$")


def custom_id(job_id: int, question_id: int, sample: int) -> str:
    return f"job{job_id}-q{question_id}-s{sample}"


def _job_context(database: Engine, job_id: int) -> tuple[Job, ExperimentConfig, Dataset, list[Question]]:
    with session_scope(database) as s:
        job = s.get(Job, job_id)
        if job is None:
            raise UserError(f"no job {job_id} in this workspace")
        if job.kind != "teacher":
            raise UserError(f"job {job_id} is a {job.kind} job, not a teacher job")
        if (job.config or {}).get("source") == "recorded":
            raise UserError(f"job {job_id} holds recorded rationales; there is nothing to request")
        config = config_from_dict(job.config, f"job {job_id} config")
        dataset = s.get(Dataset, job.dataset_id) if job.dataset_id is not None else None
        if dataset is None:
            raise UserError(f"job {job_id} has no dataset")
        questions = split_questions(s, dataset.id, config.data.split, config.data.train_limit)  # type: ignore[arg-type]
    if not config.teacher.model:
        raise UserError(f"job {job_id}: teacher.model is empty")
    return job, config, dataset, questions


def prepare_job(database: Engine, config: ExperimentConfig, echo: Any = None) -> Job:
    """The teacher job of ``config`` (found by fingerprint, else created pending) for a Batch API round trip."""
    from engine.jobs import config_dataset

    echo = echo or (lambda _line: None)
    dataset = config_dataset(database, config)
    if not config.teacher.base_url or not config.teacher.model:
        raise UserError("teacher.base_url and teacher.model must be set (the Batch API bodies name the model)")
    job = store.find_teacher_job(database, config, dataset)
    if job is not None:
        return job
    job = create_job(
        database,
        "teacher",
        config.model_dump(mode="json"),
        fp=store.teacher_fingerprint(config, dataset),
        dataset_id=dataset.id,
        label=f"{config.name}: {config.teacher.model} (batch)",
    )
    echo(f"job {job.id} teacher: created for the Batch API")
    return job


def export_batch(database: Engine, job_id: int, out: Path | str, *, force: bool = False) -> dict[str, Any]:
    """Write the Batch API input lines of the job's questions not answered yet (cached replies left out)."""
    out = Path(out)
    refuse_existing(out, force)  # before any work; checked again when the file takes its name
    job, config, _dataset, questions = _job_context(database, job_id)
    endpoint = store.teacher_endpoint(config)
    cache = ResponseCache(database)
    with session_scope(database) as s:
        done = done_question_ids(s, job_id)
    lines: list[str] = []
    open_questions = 0
    cached = 0
    for q in questions:
        if q.id in done:
            continue
        open_questions += 1
        for request in store.teacher_requests(config, q.text):
            if cache.get(request.cache_key(endpoint)) is not None:
                cached += 1
                continue
            line = {
                "custom_id": custom_id(job_id, q.id, request.sample),  # type: ignore[arg-type]
                "method": "POST",
                "url": endpoint.path,
                "body": request.body(endpoint.model, endpoint.api),
            }
            lines.append(json.dumps(line, ensure_ascii=False))
    with new_file(out, force=force) as fh:
        fh.write("".join(f"{line}\n" for line in lines))
    return {"job": job.id, "file": str(out), "requests": len(lines), "questions": open_questions, "cached": cached}


def _error_reason(obj: dict[str, Any]) -> str:
    error = obj.get("error")
    response = obj.get("response") or {}
    if isinstance(error, dict) and (error.get("message") or error.get("code")):
        return f"batch error: {error.get('code') or ''} {error.get('message') or ''}".strip()
    status = response.get("status_code")
    body = response.get("body")
    detail = ""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        detail = str(body["error"].get("message") or "")
    return f"HTTP {status}" + (f": {detail[:200]}" if detail else "") if status else "batch error"


def import_batch(database: Engine, job_id: int, results: Path | str, echo: Any = None) -> dict[str, Any]:
    """Read a Batch API output file into the cache and the job's paths; returns counts."""
    echo = echo or (lambda _line: None)
    results = Path(results)
    if not results.is_file():
        raise UserError(f"{results}: no such file")
    job, config, dataset, questions = _job_context(database, job_id)
    endpoint = store.teacher_endpoint(config)
    cache = ResponseCache(database)
    by_id = {q.id: q for q in questions}
    failures: dict[tuple[int, int], str] = {}
    stored = prompt_tokens = completion_tokens = lines = 0
    with results.open(encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            lines += 1
            where = f"{results}: line {lineno}"
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UserError(f"{where}: invalid JSON ({exc.msg})") from None
            match = _CUSTOM_ID_RE.match(str(obj.get("custom_id", "")) if isinstance(obj, dict) else "")
            if match is None:
                raise UserError(f"{where}: custom_id {obj.get('custom_id')!r} is not one this tool exported")
            line_job, qid, sample = (int(g) for g in match.groups())
            if line_job != job_id:
                raise UserError(f"{where}: the line belongs to job {line_job}, not job {job_id}")
            question = by_id.get(qid)
            if question is None or sample >= config.teacher.samples:
                raise UserError(f"{where}: question {qid} sample {sample} is not a request of job {job_id}")
            response = obj.get("response") or {}
            body = response.get("body")
            if obj.get("error") or response.get("status_code") != 200 or not isinstance(body, dict):
                failures[(qid, sample)] = _error_reason(obj)
                continue
            try:
                reply = reply_from_body(body, endpoint.api)
            except RequestFailed as exc:
                failures[(qid, sample)] = exc.reason
                continue
            request = store.teacher_requests(config, question.text)[sample]
            cache.put(request.cache_key(endpoint), endpoint, request, reply)
            stored += 1
            prompt_tokens += reply.prompt_tokens
            completion_tokens += reply.completion_tokens

    with session_scope(database) as s:
        done = done_question_ids(s, job_id)
    answered = failed = 0
    for q in questions:
        if q.id in done:
            continue
        assert q.id is not None
        requests: list[TeacherRequest] = store.teacher_requests(config, q.text)
        replies = [cache.get(r.cache_key(endpoint)) for r in requests]
        if all(r is not None for r in replies):
            store.store_question(database, job_id, q, dataset, replies)  # type: ignore[arg-type]
            answered += 1
        else:
            reason = next((failures[(q.id, r.sample)] for r in requests if (q.id, r.sample) in failures), None)
            if reason is not None:
                store.mark_failed(database, job_id, q.id, reason)
                failed += 1

    ctx = JobContext(database, job_id, echo)
    with session_scope(database) as s:
        items = store.item_counts(s, job_id)
        counts = store.path_counts(s, job_id)
        summary = dict(job.summary or {})
    extra_cost = cost_usd(prompt_tokens, completion_tokens, config, BATCH_PRICE_FACTOR)
    summary.update(
        questions=len(questions),
        answered=items.get("done", 0),
        failed=items.get("failed", 0),
        rationales=sum(counts["total"].values()),
        correct=sum(counts["correct"].values()),
        model=config.teacher.model,
        batch_replies=int(summary.get("batch_replies", 0)) + stored,
        prompt_tokens=int(summary.get("prompt_tokens", 0)) + prompt_tokens,
        completion_tokens=int(summary.get("completion_tokens", 0)) + completion_tokens,
        cost_usd=round(float(summary.get("cost_usd", 0.0)) + extra_cost, 6),
    )
    open_left = len(questions) - items.get("done", 0) - items.get("failed", 0)
    ctx.progress(items.get("done", 0) + items.get("failed", 0), len(questions), "questions", force=True)
    if open_left == 0:
        ctx.finish("completed", summary=summary)
        status = "completed"
    else:
        ctx.update_summary(**summary)
        status = job.status
    ctx.log(f"batch import {results.name}: {stored} replies stored, {answered} questions answered, {failed} failed")
    return {
        "job": job_id,
        "lines": lines,
        "stored": stored,
        "answered": answered,
        "failed": failed,
        "open": open_left,
        "status": status,
        "cost_usd": round(extra_cost, 6),
    }
