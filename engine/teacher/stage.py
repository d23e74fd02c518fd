"""Stage ``teacher``: a rationale for every question of the config's split from an OpenAI-compatible teacher.

Each question gets ``teacher.samples`` requests with the prompt ``Question: {q}. Answer: Let's think step by
step.``, at most ``teacher.concurrency`` in flight. A question's rationales are written together with its
done marker once all its samples are in, so a killed job redoes only unfinished questions, and the response
cache makes sure no request that already succeeded is sent again. A question whose request keeps failing is
marked failed with the reason and the others go on; running the stage again retries only those. Credentials
refused, a wrong URL or an unreachable server stop the stage at once with one line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from db.errors import UserError
from db.models import Dataset, Job, Question
from db.paths_repo import done_question_ids
from db.queries import split_questions
from db.session import session_scope
from engine.config import ExperimentConfig
from engine.jobs import JobContext, create_job, refuse_if_running_elsewhere, run_job
from engine.teacher import store
from engine.teacher.cache import ResponseCache
from engine.teacher.client import Reply, RequestFailed, Stats, TeacherClient, check_key_available, first_error

CANCEL_CHECK_S = 0.5
SUMMARY_EVERY_S = 1.0
#: Counters of the job summary that add up over the runs of one job (a resume adds to them).
ADDITIVE = ("requests", "retries", "cache_hits", "prompt_tokens", "completion_tokens", "cost_usd")


def cost_usd(prompt_tokens: int, completion_tokens: int, config: ExperimentConfig, factor: float = 1.0) -> float:
    t = config.teacher
    return factor * (prompt_tokens * t.price_input_per_m + completion_tokens * t.price_output_per_m) / 1e6


class _Run:
    """One run of the stage body: the async fan-out over questions, the counters and the progress line."""

    def __init__(
        self, database: Engine, ctx: JobContext, config: ExperimentConfig, dataset: Dataset, questions: list[Question]
    ):
        self.engine = database
        self.ctx = ctx
        self.config = config
        self.dataset = dataset
        self.questions = questions
        self.total = len(questions)
        self.processed = 0
        self.failed_now = 0
        self.stats = Stats()
        self._last_cancel_check = 0.0
        self._last_summary = 0.0
        with session_scope(database) as s:
            job = s.get(Job, ctx.job_id)
            assert job is not None
            self.previous = {k: job.summary.get(k, 0) for k in ADDITIVE}

    def totals(self) -> dict[str, Any]:
        st = self.stats
        return {
            "requests": self.previous["requests"] + st.requests,
            "retries": self.previous["retries"] + st.retries,
            "cache_hits": self.previous["cache_hits"] + st.cache_hits,
            "prompt_tokens": self.previous["prompt_tokens"] + st.prompt_tokens,
            "completion_tokens": self.previous["completion_tokens"] + st.completion_tokens,
            "cost_usd": round(
                self.previous["cost_usd"] + cost_usd(st.prompt_tokens, st.completion_tokens, self.config), 6
            ),
        }

    def progress(self, force: bool = False) -> None:
        t = self.totals()
        extra = (
            f"{self.stats.rate():.2f} req/s, {t['prompt_tokens'] + t['completion_tokens']} tokens, "
            f"${t['cost_usd']:.4f}, {self.stats.cache_hits} cached"
        )
        if self.failed_now:
            extra += f", {self.failed_now} failed"
        self.ctx.progress(self.processed, self.total, "questions", extra=extra, force=force)
        now = time.monotonic()
        if force or now - self._last_summary >= SUMMARY_EVERY_S:
            self._last_summary = now
            self.ctx.update_summary(**t)

    def maybe_check_cancel(self) -> None:
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_CHECK_S:
            self._last_cancel_check = now
            self.ctx.check_cancel()

    async def one(self, client: TeacherClient, question: Question) -> None:
        requests = store.teacher_requests(self.config, question.text)
        results = await asyncio.gather(*(client.complete(r) for r in requests), return_exceptions=True)
        replies: list[Reply] = []
        reasons: list[str] = []
        for result in results:
            if isinstance(result, RequestFailed):
                reasons.append(result.reason)
            elif isinstance(result, BaseException):
                raise result
            else:
                replies.append(result)
        assert question.id is not None
        if reasons:
            self.failed_now += 1
            store.mark_failed(self.engine, self.ctx.job_id, question.id, reasons[0])
            self.ctx.log(f"question {question.index}: failed: {reasons[0]}", level="warning")
        else:
            store.store_question(self.engine, self.ctx.job_id, question, self.dataset, replies)
        self.processed += 1
        self.progress()
        self.maybe_check_cancel()

    async def run(self, todo: list[Question]) -> None:
        endpoint = store.teacher_endpoint(self.config)
        client = TeacherClient(endpoint, ResponseCache(self.engine), log=lambda m: self.ctx.log(m, level="warning"))
        self.stats = client.stats
        async with client:
            try:
                async with asyncio.TaskGroup() as group:
                    for question in todo:
                        group.create_task(self.one(client, question))
            except BaseExceptionGroup as eg:
                raise first_error(eg) from None


def teacher_body(
    database: Engine, config: ExperimentConfig, dataset: Dataset, questions: list[Question]
) -> Callable[[JobContext], dict]:
    ids = {q.id for q in questions}

    def body(ctx: JobContext) -> dict:
        with session_scope(database) as s:
            done = done_question_ids(s, ctx.job_id) & ids
        todo = [q for q in questions if q.id not in done]
        ctx.log(
            f"{dataset.name}/{config.data.split}: {len(questions)} questions, {len(done)} already done, "
            f"{len(todo)} to ask {config.teacher.model} at {config.teacher.base_url}"
        )
        run = _Run(database, ctx, config, dataset, questions)
        run.processed = len(done)
        run.progress(force=True)
        if todo:
            asyncio.run(run.run(todo))
        run.progress(force=True)
        with session_scope(database) as s:
            items = store.item_counts(s, ctx.job_id)
            reasons = store.failed_reasons(s, ctx.job_id)
            counts = store.path_counts(s, ctx.job_id)
        answered, failed = items.get("done", 0), items.get("failed", 0)
        if failed and not answered:
            raise UserError(f"teacher: all {failed} questions failed; e.g. {reasons[0] if reasons else '?'}")
        if failed:
            ctx.log(
                f"{failed} of {len(questions)} questions failed (e.g. {reasons[0] if reasons else '?'}); "
                "run the stage again to retry only those",
                level="warning",
            )
        return {
            **run.totals(),
            "questions": len(questions),
            "answered": answered,
            "failed": failed,
            "rationales": sum(counts["total"].values()),
            "correct": sum(counts["correct"].values()),
            "model": config.teacher.model,
        }

    return body


def _find_job(database: Engine, fp: str) -> tuple[Job | None, bool]:
    """The newest job with this fingerprint, whatever its status (a failed or cancelled one is resumed, so its
    answered questions are not written twice), and whether it is finished (completed, no failed question)."""
    with session_scope(database) as s:
        job = s.exec(
            select(Job).where(Job.kind == "teacher", Job.fingerprint == fp).order_by(Job.id.desc())  # type: ignore[union-attr]
        ).first()
        if job is None:
            return None, False
        failed = store.item_counts(s, job.id).get("failed", 0)  # type: ignore[arg-type]
    return job, job.status == "completed" and not failed


def run_teacher(database: Engine, config: ExperimentConfig, echo: Callable[[str], None]) -> list[Job]:
    from engine.jobs import config_dataset, reload_job

    dataset = config_dataset(database, config)
    t = config.teacher
    if not t.base_url:
        with session_scope(database) as s:
            recorded = store.recorded_job(s, dataset.id)  # type: ignore[arg-type]
        if recorded is not None:
            echo(f"job {recorded.id} teacher: no teacher.base_url set; using the recorded rationales")
            return [recorded]
        raise UserError(
            "teacher.base_url is empty: set [teacher] base_url and model, or import recorded rationales with "
            "`sert-tui teacher import reasoning-teacher`"
        )
    if not t.model:
        raise UserError("teacher.model is empty: name the teacher model at teacher.base_url")
    check_key_available(store.teacher_endpoint(config))
    with session_scope(database) as s:
        questions = split_questions(s, dataset.id, config.data.split, config.data.train_limit)  # type: ignore[arg-type]
    if not questions:
        raise UserError(f"dataset {dataset.name!r} has no questions in split {config.data.split!r}")
    fp = store.teacher_fingerprint(config, dataset)
    job, finished = _find_job(database, fp)
    if job is not None and finished:
        echo(f"job {job.id} teacher: already completed with this config (skipped)")
        return [job]
    if job is None:
        job = create_job(
            database,
            "teacher",
            config.model_dump(mode="json"),
            fp=fp,
            dataset_id=dataset.id,
            label=f"{config.name}: {t.model}",
        )
        echo(f"job {job.id} teacher: started")
    else:
        refuse_if_running_elsewhere(job)
        echo(f"job {job.id} teacher: resuming ({job.status})")
    assert job.id is not None
    run_job(JobContext(database, job.id, echo), teacher_body(database, config, dataset, questions))
    return [reload_job(database, job.id)]
