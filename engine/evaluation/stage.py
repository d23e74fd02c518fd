"""Stage ``eval``: greedy generation on ``eval.split`` (first ``data.test_limit`` questions) and the metrics
Acc/Fmt/Len/Rep, for the base model and trained checkpoints.

One ``eval`` job per evaluated model (``parent_id`` = the training job, none for the base model) with one
``Evaluation`` row and one ``Prediction`` row per question. Predictions are written batch by batch; a killed
or cancelled evaluation skips the questions already predicted when it runs again, and the metrics are always
computed from all stored predictions. The prompt is the training prompt ``Question: {q}. Answer:`` for every
model, the zero-shot base model included.

``run --stage eval`` evaluates the base model (zero-shot, when ``eval.baselines``) and, for each label
(Finetune, SERT, RD, SERT+RD), the completed training job that this config trained, found by the fingerprint the
training stage finds and resumes it by (``train_fingerprint`` of the config's plan: its training set, so its filter
job, start model, student and train settings); where there is none, the newest one of the config's dataset and
student, said on the output (``run_eval(strict=True)``, for the study: an error instead). ``eval.job`` or
``eval.checkpoint`` picks one model instead: any training job (its final checkpoint, else its newest, e.g. a
cancelled job's last) or any checkpoint directory the workspace registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.dialects.sqlite import insert
from sqlalchemy.engine import Engine
from sqlmodel import select

from db import vocabulary as vocab
from db.errors import UserError
from db.models import Checkpoint, Dataset, Evaluation, Job, Prediction, Question
from db.queries import split_questions
from db.session import session_scope
from engine.config import ExperimentConfig
from engine.evaluation import lineage
from engine.evaluation.metrics import Scored, aggregate, score_output
from engine.evaluation.stats import share_interval
from engine.jobs import JobContext, config_dataset, find_or_create_job, fingerprint, reload_job, run_job
from engine.prompts import training_prompt
from engine.training.datasets import FORMAT_VERSION

Echo = Callable[[str], None]
METRICS_VERSION = 1


@dataclass(frozen=True)
class Target:
    """A model to evaluate: the base model (``job`` None) or a training job's final checkpoint."""

    label: str
    model_ref: str  # "default" / hub id / path of the base model, or the checkpoint directory
    job: Job | None = None
    checkpoint: Checkpoint | None = None


def base_target(config: ExperimentConfig) -> Target:
    return Target(vocab.ZERO_SHOT, config.student.model)


def job_target(database: Engine, job: Job) -> Target:
    from engine.training.checkpoints import final_checkpoint

    ckpt = final_checkpoint(database, job.id)  # type: ignore[arg-type]
    if ckpt is None:
        raise UserError(f"{job.kind} job {job.id} has no final checkpoint to evaluate")
    with session_scope(database) as s:
        label = lineage.job_label(s, job)
    return Target(label, ckpt.path, job, ckpt)


def chosen_target(database: Engine, config: ExperimentConfig) -> Target:
    """The one model ``eval.job`` or ``eval.checkpoint`` names."""
    from pathlib import Path

    from engine.training.checkpoints import final_checkpoint

    ev = config.eval
    if ev.job is not None and ev.checkpoint:
        raise UserError("eval.job and eval.checkpoint both name a model to evaluate: set one of them")
    with session_scope(database) as s:
        if ev.job is not None:
            job = s.get(Job, ev.job)
            if job is None or job.kind not in vocab.TRAINING_KINDS:
                raise UserError(f"eval.job: job {ev.job} is not a training job of this workspace (sert-tui jobs list)")
            ckpt = (
                final_checkpoint(database, ev.job)
                or s.exec(
                    select(Checkpoint).where(Checkpoint.job_id == ev.job).order_by(Checkpoint.step.desc())  # type: ignore[attr-defined]
                ).first()
            )
            if ckpt is None:
                raise UserError(f"eval.job: {job.kind} job {ev.job} has no checkpoint yet")
        else:
            path = str(Path(ev.checkpoint).expanduser().resolve())
            ckpt = s.exec(select(Checkpoint).where(Checkpoint.path == path)).first()
            if ckpt is None:
                raise UserError(
                    f"eval.checkpoint: {path} is not a checkpoint of this workspace (to evaluate another model "
                    "zero-shot, set student.model to it)"
                )
            job = s.get(Job, ckpt.job_id)
            assert job is not None
        label = lineage.job_label(s, job)
    return Target(label, ckpt.path, job, ckpt)


def trained_by(job: Job, config: ExperimentConfig) -> bool:
    """Whether ``job``'s frozen config has ``config``'s name, data and train settings (what only changes when
    checkpoints are written aside): the order of the fallback of :func:`newest_targets`, not a match (two configs
    that differ only in ``filters`` look the same here; the training fingerprint tells them apart)."""
    from engine.training.stage import CADENCE_KEYS

    frozen, mine = job.config or {}, config.model_dump(mode="json")

    def train(c: dict) -> dict:
        return {k: v for k, v in (c.get("train") or {}).items() if k not in CADENCE_KEYS}

    def data(c: dict) -> tuple:
        d = c.get("data") or {}
        return d.get("dataset"), d.get("split"), d.get("train_limit")

    return frozen.get("name") == mine["name"] and train(frozen) == train(mine) and data(frozen) == data(mine)


def trained_fingerprints(database: Engine, config: ExperimentConfig, dataset: Dataset) -> dict[str, str | Exception]:
    """Per label (Finetune, SERT, RD, SERT+RD): the fingerprint of the training job ``config`` trains for it, the
    one the training stage finds and resumes its job by (``train_fingerprint`` over the plan ``finetune_plan``,
    ``sert_plan`` or ``distill_plan`` builds, RD and SERT+RD with ``train.distill_from`` "base" and "self-train"),
    or the UserError that says why no plan can be built now (no filter job of this config's filter settings, no
    teacher rationales, ...)."""
    from engine.training.stage import distill_plan, finetune_plan, sert_plan, train_fingerprint

    def variant(distill_from: str) -> ExperimentConfig:
        copy = config.model_copy(deep=True)
        copy.train.distill_from = distill_from  # type: ignore[assignment]
        return copy

    plans = [
        (vocab.FINETUNE, finetune_plan, config),
        (vocab.SERT, sert_plan, config),
        (vocab.RD, distill_plan, variant("base")),
        (vocab.SERT_RD, distill_plan, variant("self-train")),
    ]
    out: dict[str, str | Exception] = {}
    for label, build, cfg in plans:
        try:
            out[label] = train_fingerprint(cfg, build(database, cfg, dataset), dataset)
        except UserError as exc:
            out[label] = exc
    return out


def newest_targets(
    database: Engine,
    config: ExperimentConfig,
    dataset: Dataset,
    *,
    strict: bool = False,
    echo: Echo | None = None,
) -> list[Target]:
    """One completed training job of each label for the config's dataset and student: the one this config trained,
    found by its training fingerprint (:func:`trained_fingerprints`, the fingerprint the training stage resumes
    its job by), so that configs that differ only in ``filters`` each evaluate their own SERT model.

    Where no job of a label has that fingerprint (the config did not train one, or its training set changed
    since: other decisions, another filter job), the newest job of the label is evaluated instead (those with
    the config's name, data and train settings first), and ``echo`` says which and why; ``strict`` (the study)
    makes that a UserError instead. A label with no completed job at all is left out."""
    from engine.training.checkpoints import final_checkpoint

    fingerprints = trained_fingerprints(database, config, dataset)
    with session_scope(database) as s:
        jobs = s.exec(
            select(Job)
            .where(
                Job.kind.in_(vocab.TRAINING_KINDS),  # type: ignore[attr-defined]
                Job.dataset_id == dataset.id,
                Job.status == "completed",
            )
            .order_by(Job.id.desc())  # type: ignore[union-attr]
        ).all()
        labelled = [(lineage.job_label(s, j), j) for j in jobs]
    candidates: dict[str, list[Job]] = {}
    for label, job in labelled:
        if (job.config.get("student") or {}).get("model") != config.student.model:
            continue
        if final_checkpoint(database, job.id) is not None:  # type: ignore[arg-type]
            candidates.setdefault(label, []).append(job)
    chosen: list[Job] = []
    for label in vocab.TABLE_ORDER:
        mine = candidates.get(label)
        if not mine:
            continue
        fp = fingerprints.get(label)
        exact = [j for j in mine if isinstance(fp, str) and j.fingerprint == fp]
        if exact:
            chosen.append(exact[0])
            continue
        fallback = sorted(mine, key=lambda j: not trained_by(j, config))[0]  # stable: newest first
        if isinstance(fp, Exception):
            why = f"this config trains no {label} model now ({fp})"
        else:
            why = (
                f"no completed {fallback.kind} job has this config's training fingerprint (this config did not "
                "train one, or its training set, start model or train settings differ from those it trained with)"
            )
        message = (
            f"{label}: evaluating {fallback.kind} job {fallback.id}, the newest {label} model, not this config's: {why}"
        )
        if strict:
            raise UserError(f"{label}: no {label} model trained by this config to evaluate: {why}")
        if echo is not None:
            echo(message)
        chosen.append(fallback)
    return [job_target(database, j) for j in chosen]


def eval_dtype(config: ExperimentConfig) -> str:
    """What the evaluation computes in: ``student.dtype`` if set; for ``auto``, fp32 on a CPU and the measured
    choice of :func:`engine.precision.inference_dtype_name` elsewhere (bf16 on CUDA with bf16).

    Not bf16 on a CPU, although it is faster there: greedy outputs follow every rounding, and on 200 StrategyQA
    test questions a checkpoint evaluated in bf16 answered in the expected format 13 points less often than in
    fp32 (``benchmarks/evaluation.py``), far beyond what a comparison of runs can absorb. Set
    ``student.dtype = "bfloat16"`` to evaluate in bf16 anyway."""
    from engine.models import resolve_device
    from engine.precision import inference_dtype_name

    if config.student.dtype != "auto":
        return config.student.dtype
    device = resolve_device(config.student.device)
    return "float32" if device == "cpu" else inference_dtype_name(device)


def eval_fingerprint(config: ExperimentConfig, dataset: Dataset, target: Target) -> str:
    return fingerprint(
        "eval",
        {
            "model": target.model_ref,
            "checkpoint": target.checkpoint.id if target.checkpoint else None,
            "dtype": eval_dtype(config),
            "decoder": config.eval.decoder,
            "dataset_id": dataset.id,
            "split": config.eval.split,
            "test_limit": config.data.test_limit,
            "max_new_tokens": config.eval.max_new_tokens,
            "format": FORMAT_VERSION,
            "metrics": METRICS_VERSION,
        },
    )


def _evaluation_row(database: Engine, job_id: int, dataset: Dataset, config: ExperimentConfig, target: Target) -> int:
    with session_scope(database) as s:
        row = s.exec(select(Evaluation).where(Evaluation.job_id == job_id)).first()
        if row is None:
            row = Evaluation(
                job_id=job_id,
                checkpoint_id=target.checkpoint.id if target.checkpoint else None,
                model_ref=target.model_ref,
                label=target.label,
                dataset_id=dataset.id,  # type: ignore[arg-type]
                split=config.eval.split,
            )
            s.add(row)
            s.flush()
        assert row.id is not None
        return row.id


def _store_predictions(database: Engine, evaluation_id: int, rows: list[dict]) -> None:
    if not rows:
        return
    stmt = insert(Prediction).values(rows).on_conflict_do_nothing(index_elements=["evaluation_id", "question_id"])
    with session_scope(database) as s:
        s.exec(stmt)  # type: ignore[call-overload]


def _rescore_all(database: Engine, evaluation_id: int) -> list[Scored]:
    """The stored predictions as ``Scored`` values (what the metrics are computed from)."""
    with session_scope(database) as s:
        preds = s.exec(select(Prediction).where(Prediction.evaluation_id == evaluation_id)).all()
    return [
        Scored(
            answer=p.answer,
            correct=p.correct,
            well_formed=p.well_formed,
            marker=bool(p.scores.get("marker")),
            degenerate=bool(p.scores.get("degenerate")),
            tokens=p.tokens,
            reasoning_tokens=int(p.scores.get("reasoning_tokens", 0)),
            rep=float(p.scores.get("rep", 0.0)),
            rep4=float(p.scores.get("rep4", 0.0)),
        )
        for p in preds
    ]


def greedy_outputs(model, tokenizer, items: list[tuple[int, str]], config: ExperimentConfig, log: Echo):
    """The greedy outputs of ``items`` in batches, on the decoder ``eval.decoder`` names: the engine's
    continuous batching (rows: ``eval.batch_size``, fewer where their KV cache would not fit in memory) or
    ``model.generate`` in batches of ``eval.batch_size``."""
    ev = config.eval
    if ev.decoder == "generate":
        from engine.evaluation.generate import greedy_batches

        return greedy_batches(model, tokenizer, items, max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size)
    from engine.evaluation.decode import greedy_engine
    from engine.sampling.cache import rows_that_fit

    param = next(model.parameters())
    longest = max(len(tokenizer(p).input_ids) for _k, p in items)
    rows = rows_that_fit(model.config, longest + ev.max_new_tokens, param.dtype, param.device, ev.batch_size)
    if rows < ev.batch_size:
        log(f"eval.batch_size = {ev.batch_size}: {rows} rows fit in memory, decoding {rows} at a time")
    return greedy_engine(model, tokenizer, items, max_new_tokens=ev.max_new_tokens, rows=rows, log=log)


def eval_body(database: Engine, job_id: int, config: ExperimentConfig, dataset: Dataset, target: Target):
    def body(ctx: JobContext) -> dict:
        from transformers.utils import logging as hf_logging

        from engine.models import resolve_device
        from engine.training.checkpoints import load_trained

        hf_logging.disable_progress_bar()
        evaluation_id = _evaluation_row(database, job_id, dataset, config, target)
        with session_scope(database) as s:
            questions = split_questions(s, dataset.id, config.eval.split, config.data.test_limit)  # type: ignore[arg-type]
            done = set(s.exec(select(Prediction.question_id).where(Prediction.evaluation_id == evaluation_id)).all())
        if not questions:
            raise UserError(f"dataset {dataset.name!r} has no questions in split {config.eval.split!r}")
        todo = [q for q in questions if q.id not in done]
        total = len(questions)
        ctx.log(
            f"evaluating {target.label} ({target.model_ref}) on {dataset.name}/{config.eval.split}: {total} questions, "
            f"{len(done)} already predicted"
        )
        ctx.progress(len(done), total, "questions", force=True)
        if todo:
            device = resolve_device(config.student.device)
            dtype = eval_dtype(config)
            if config.student.dtype == "auto":
                from engine.precision import describe

                why = "fp32 on a CPU (see eval_dtype)" if device == "cpu" else describe(device, dtype)
                ctx.log(f"evaluation dtype auto: {why}")
            model, tokenizer = load_trained(target.model_ref, device=device, dtype=dtype)
            letters = (dataset.meta or {}).get("choice_letters") or "ABCDE"
            by_id: dict[int, Question] = {q.id: q for q in todo}  # type: ignore[misc]

            def tokenize(text: str) -> list[int]:
                return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []

            count = len(done)
            batches = greedy_outputs(model, tokenizer, [(q.id, training_prompt(q.text)) for q in todo], config, ctx.log)
            for batch in batches:
                rows = []
                for g in batch:
                    q = by_id[g.key]
                    sc = score_output(
                        g.text, q.answer, dataset.answer_type, tokenize, letters=letters, output_tokens=g.token_ids
                    )
                    rows.append(
                        {
                            "evaluation_id": evaluation_id,
                            "question_id": q.id,
                            "output": g.text,
                            "answer": sc.answer,
                            "correct": sc.correct,
                            "well_formed": sc.well_formed,
                            "tokens": sc.tokens,
                            "scores": sc.extras(),
                        }
                    )
                _store_predictions(database, evaluation_id, rows)
                count += len(rows)
                ctx.progress(count, total, "questions")
                ctx.check_cancel()
        metrics = aggregate(_rescore_all(database, evaluation_id))
        with session_scope(database) as s:
            row = s.get(Evaluation, evaluation_id)
            assert row is not None
            row.n, row.acc, row.fmt, row.len, row.rep = (
                int(metrics["n"] or 0),
                metrics["acc"],
                metrics["fmt"],
                metrics["len"],
                metrics["rep"],
            )
            s.add(row)
        n = int(metrics["n"] or 0)

        def percent(share: float | None) -> str:
            """``46.0% [39.2, 52.9]``: a share of the questions with its 95% Wilson interval."""
            ci = share_interval(share, n)
            if share is None or ci is None:
                return "-"
            low, high = ci
            return f"{100 * share:.1f}% [{100 * low:.1f}, {100 * high:.1f}]"

        ctx.log(
            f"{target.label}: Acc {percent(metrics['acc'])}, Fmt {percent(metrics['fmt'])}, "
            f"Len {metrics['len']:.1f}, Rep {metrics['rep']:.3f} (n={n})"
        )
        report_metrics(database, config, job_id, target, metrics)
        if config.judge.enabled:
            from engine.teacher.judge import judge_evaluation

            judge_evaluation(database, evaluation_id, config.judge, ctx.log)
        return {"evaluation": evaluation_id, "label": target.label, "model": target.model_ref, **metrics}

    return body


def report_metrics(database: Engine, config: ExperimentConfig, job_id: int, target: Target, metrics: dict) -> None:
    """Acc/Fmt/Len/Rep to the trackers of ``[log] report_to`` as ``eval/acc``, ... at the evaluated checkpoint's
    step (0 for a base model), in the evaluation job's own run."""
    if not config.log.report_to:
        return
    from engine.tracking import open_trackers

    values = {f"eval/{k}": metrics[k] for k in ("acc", "fmt", "len", "rep") if metrics.get(k) is not None}
    trackers = open_trackers(database, config, job_id, target.label)
    try:
        trackers.log(target.checkpoint.step if target.checkpoint else 0, values)
    finally:
        trackers.close()


def evaluate(database: Engine, config: ExperimentConfig, dataset: Dataset, target: Target, echo: Echo) -> Job:
    from engine.tracking import check_report_to

    check_report_to(config)
    fp = eval_fingerprint(config, dataset, target)
    parent_id = target.job.id if target.job is not None else None
    job, done = find_or_create_job(database, "eval", fp, config, echo, dataset_id=dataset.id, parent_id=parent_id)
    assert job.id is not None
    if job.label != target.label:
        with session_scope(database) as s:
            row = s.get(Job, job.id)
            assert row is not None
            row.label = target.label
    if not done:
        run_job(JobContext(database, job.id, echo), eval_body(database, job.id, config, dataset, target))
    return reload_job(database, job.id)


def run_eval(database: Engine, config: ExperimentConfig, echo: Echo, *, strict: bool = False) -> list[Job]:
    """The eval stage: ``eval.job`` / ``eval.checkpoint``, else the base model (with ``eval.baselines``) and each
    label's model of :func:`newest_targets`; ``strict``: a label whose model this config did not train (by its
    training fingerprint) is a UserError, not a fallback to the newest."""
    dataset = config_dataset(database, config)
    if config.eval.job is not None or config.eval.checkpoint:
        return [evaluate(database, config, dataset, chosen_target(database, config), echo)]
    trained = newest_targets(database, config, dataset, strict=strict, echo=echo)
    targets = ([base_target(config)] if config.eval.baselines else []) + trained
    if not targets:
        raise UserError("nothing to evaluate: no completed training job for this config (and eval.baselines = false)")
    return [evaluate(database, config, dataset, t, echo) for t in targets]
