"""Stage ``sample``: the student's latent reasoning paths for the questions of the config's split.

Resumable: each question's paths are written together with its done marker in one transaction as soon as
the sampler finishes the question, so a killed or cancelled job skips finished questions when it is run
again and redoes a question that was cut half-way; the unique path key keeps anything from doubling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import select

from db.errors import UserError
from db.models import Dataset, Job, Path, Question
from db.paths_repo import done_question_ids, write_question_paths
from db.queries import split_questions
from db.session import session_scope
from engine.answers import AnswerSpec, answer_spec, parse_path_answer
from engine.config import ExperimentConfig
from engine.jobs import JobCancelled, JobContext, config_dataset, find_or_create_job, fingerprint, reload_job, run_job
from engine.repetition import rep2
from engine.sampling.paths import text_decoder

#: Sampling settings meant for speed: left out of the fingerprint so that changing them resumes the same job.
#: They do not change which paths are sampled (keys, counts, seeds); in the default mode a different batch
#: composition can round differently and flip tokens of a text (docs/scale-out.md, "Sampling across machines"), which
#: ``sampling.batch_invariant = true`` rules out.
THROUGHPUT_KEYS = ("batch_size", "tensor_parallel_size", "max_batch_memory_mb")
CANCEL_CHECK_S = 0.5


def sample_fingerprint(config: ExperimentConfig, dataset: Dataset) -> str:
    sampling = {k: v for k, v in config.sampling.model_dump().items() if k not in THROUGHPUT_KEYS}
    return fingerprint(
        "sample",
        {
            "student": config.student.model_dump(),
            "sampling": sampling,
            "data": {
                "dataset_id": dataset.id,
                "dataset": dataset.name,
                "split": config.data.split,
                "train_limit": config.data.train_limit,
            },
        },
    )


def path_row(
    path: Any, gold: str, spec: AnswerSpec, decode: Callable[[list[int]], str] | None = None
) -> dict[str, Any]:
    """The stored columns of one sampled path (a ``SampledPath``): rep-2 over its token ids, parsed answer, and
    its confidence (:func:`engine.sampling.paths.path_confidence`; ``decode``: the sampler's own decoding of token
    ids, which made ``path.text``; without it, or without margins, None)."""
    from engine.answers import find_answer
    from engine.sampling.paths import path_confidence

    token_ids: Sequence[int] = path.token_ids
    answer, correct = parse_path_answer(path.text, gold, spec)
    confidence = None
    margins = getattr(path, "margins", None)
    if decode is not None and margins is not None:
        found = find_answer(path.text, spec.answer_type, spec.letters)
        span = (found.start, found.end) if found is not None else None
        confidence = path_confidence(margins, list(token_ids), decode, span)
    return {
        "branch": path.branch,
        "sample": path.sample,
        "branch_token": path.branch_token,
        "text": path.text,
        "tokens": len(token_ids),
        "mean_logprob": path.mean_logprob,
        "perplexity": path.perplexity,
        "rep2": rep2(token_ids),
        "confidence": confidence,
        "answer": answer,
        "correct": correct,
    }


def _cancel_poll(ctx: JobContext) -> tuple[Callable[[], bool], Callable[[], bool]]:
    """A rate-limited ``should_stop`` for the sampler, and a way to ask whether it said stop."""
    state = {"stop": False, "last": 0.0}

    def should_stop() -> bool:
        now = time.monotonic()
        if not state["stop"] and now - state["last"] >= CANCEL_CHECK_S:
            state["last"] = now
            try:
                ctx.check_cancel()
            except JobCancelled:
                state["stop"] = True
        return bool(state["stop"])

    return should_stop, lambda: bool(state["stop"])


def sample_body(
    database: Engine, job_id: int, config: ExperimentConfig, dataset: Dataset, questions: list[Question]
) -> Callable[[JobContext], dict]:
    spec = answer_spec(dataset)
    gold = {q.id: q.answer for q in questions}
    total = len(questions)

    def body(ctx: JobContext) -> dict:
        from engine.sampling.backends import make_sampler

        with session_scope(database) as s:
            done = done_question_ids(s, job_id) & set(gold)
        todo = [q for q in questions if q.id not in done]
        ctx.log(f"{dataset.name}/{config.data.split}: {total} questions, {len(done)} already done, {len(todo)} to go")
        ctx.progress(len(done), total, "questions", force=True)
        if todo:
            sampler = make_sampler(config.student, config.sampling, log=ctx.log)
            decode = text_decoder(sampler.tokenizer)
            should_stop, stopped = _cancel_poll(ctx)
            t0 = time.monotonic()
            counters = {"done": len(done), "paths": 0, "tokens": 0}

            def on_done(question_id: int, paths: list[Any]) -> None:
                rows = [path_row(p, gold[question_id], spec, decode) for p in paths]
                with session_scope(database) as s:
                    write_question_paths(s, job_id, question_id, rows)
                counters["done"] += 1
                counters["paths"] += len(rows)
                counters["tokens"] += sum(r["tokens"] for r in rows)
                elapsed = max(time.monotonic() - t0, 1e-9)
                ctx.progress(
                    counters["done"],
                    total,
                    "questions",
                    extra=f"{counters['paths'] / elapsed:.1f} paths/s, {counters['tokens'] / elapsed:.1f} tokens/s",
                )

            try:
                ctx.check_cancel()  # asked while the model loaded: stop before measuring or decoding anything
                sampler.sample(items=[(q.id, q.text) for q in todo], on_done=on_done, should_stop=should_stop)
            finally:
                sampler.close()  # a backend with processes of its own (vLLM) ends them
            if stopped():
                raise JobCancelled(f"job {job_id} cancelled")
        with session_scope(database) as s:
            finished = done_question_ids(s, job_id) & set(gold)
            n_paths, n_tokens = s.exec(
                select(func.count(Path.id), func.coalesce(func.sum(Path.tokens), 0)).where(Path.job_id == job_id)
            ).one()
        missing = total - len(finished)
        if missing:
            raise RuntimeError(f"the sampler returned no paths for {missing} of {total} questions")
        return {"questions": total, "paths": int(n_paths), "tokens": int(n_tokens)}

    return body


def run_sample(database: Engine, config: ExperimentConfig, echo: Callable[[str], None]) -> list[Job]:
    dataset = config_dataset(database, config)
    with session_scope(database) as s:
        questions = split_questions(s, dataset.id, config.data.split, config.data.train_limit)  # type: ignore[arg-type]
    if not questions:
        raise UserError(f"dataset {dataset.name!r} has no questions in split {config.data.split!r}")
    shard = config.data.shard_of()
    if shard is not None:
        # A deterministic share; the fingerprint leaves the shard out, so merged shards form one job.
        questions = questions[shard[0] :: shard[1]]
        echo(f"shard {shard[0]}/{shard[1]}: {len(questions)} questions")
    fp = sample_fingerprint(config, dataset)
    job, done = find_or_create_job(database, "sample", fp, config, echo, dataset_id=dataset.id)
    if done:
        return [job]
    assert job.id is not None
    run_job(JobContext(database, job.id, echo), sample_body(database, job.id, config, dataset, questions))
    return [reload_job(database, job.id)]
