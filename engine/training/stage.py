"""Stages ``self-train``, ``distill`` and ``finetune``: build the training set, then run the SFT engine as a job.

A training job's fingerprint covers the training set's content, the start model, the student and the train
settings that change the result (not ``save_steps`` / ``save_total_limit``), so re-running a finished
stage skips it, a killed or cancelled one resumes from its last checkpoint, and a changed set (a person
accepted or rejected paths) trains a new model. Self-training reads the selection of its config's own filter job
(found by the filter fingerprint, not the one the path rows show). Job lineage (``parent_id``) gives the run labels:
self-train → filter job (SERT); distill → teacher job (RD) or the self-train job it starts from (SERT+RD);
finetune → none (Finetune).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import select

from db import vocabulary as vocab
from db.errors import UserError
from db.models import Dataset, Job
from db.queries import split_questions
from db.session import session_scope
from engine.config import ExperimentConfig
from engine.jobs import JobContext, config_dataset, find_or_create_job, fingerprint, reload_job, run_job
from engine.ranks import is_distributed
from engine.training import checkpoints
from engine.training.datasets import (
    FORMAT_VERSION,
    Sample,
    digest,
    distill_samples,
    finetune_samples,
    sert_samples,
)
from engine.training.plan import TrainingPlan

Echo = Callable[[str], None]
#: Train settings that change when checkpoints are written, not what is learned.
CADENCE_KEYS = {"save_steps", "save_total_limit", "distill_from", "compile"}


def train_fingerprint(config: ExperimentConfig, plan: TrainingPlan, dataset: Dataset) -> str:
    """What defines a training job's result; a later self-training round adds its round (the parent checkpoint
    it starts from is ``start``), so that the fingerprints of round 1 and of a single-round run stay as they were."""
    train = {k: v for k, v in config.train.model_dump().items() if k not in CADENCE_KEYS}
    parts = {
        "train": train,
        "student": {"model": config.student.model},
        "dataset_id": dataset.id,
        "parent": plan.parent_id,
        "start": plan.start_model,
        "data": digest(plan.samples),
        "format": FORMAT_VERSION,
    }
    if plan.round > 1:
        parts["round"] = plan.round
    return fingerprint(plan.kind, parts)


# -- what each stage trains on ------------------------------------------------------------------------------
def sert_plan(database: Engine, config: ExperimentConfig, dataset: Dataset) -> TrainingPlan:
    """SERT stage 2: the paths of the config's sample job that the config's own filter job selected (the newest
    completed filter job with this config's filter fingerprint, whatever filter job ran since; its own verdicts),
    with people's decisions on top. No such filter job: a UserError (run --stage filter first)."""
    from engine.filtering.stage import filter_job_for, sample_job_for

    sample_job = sample_job_for(database, config, dataset)
    filter_job = filter_job_for(database, config, sample_job)
    assert filter_job.id is not None
    notes = [f"the training set follows the verdicts of filter job {filter_job.id}"]
    with session_scope(database) as s:
        samples = sert_samples(s, sample_job, dataset, filter_job.id, config.filters.use_choices)
    if not samples:
        raise UserError(
            f"the SERT training set of sample job {sample_job.id} is empty: no path was selected by filter job "
            f"{filter_job.id} or accepted by hand"
        )
    if len(samples) < config.train.batch_size:
        # e.g. require_correct on a set where few paths are right: the run is short and says little
        notes.append(
            f"warning: only {len(samples)} training sample(s), fewer than one batch of {config.train.batch_size}: "
            f"the filters kept few paths (sert-tui report filters --job {filter_job.id} shows which rule removed them)"
        )
    return TrainingPlan("self-train", vocab.SERT, samples, filter_job.id, config.student.model, {"kind": "base"}, notes)


def teacher_job_for(database: Engine, config: ExperimentConfig, dataset: Dataset) -> Job:
    from engine.teacher.store import find_teacher_job

    job = find_teacher_job(database, config, dataset)
    if job is None:
        if config.teacher.base_url:
            raise UserError("no teacher job for this config's teacher settings: run --stage teacher first")
        raise UserError(
            f"no teacher rationales for dataset {dataset.name!r} in the workspace: import recorded ones "
            f"(sert-tui teacher import reasoning-teacher --dataset {dataset.name} --file D_<task>.json) "
            "or set teacher.base_url and run --stage teacher"
        )
    if job.status != "completed":
        raise UserError(f"teacher job {job.id} has not completed ({job.status}): run --stage teacher")
    return job


def teacher_samples(
    database: Engine, config: ExperimentConfig, dataset: Dataset, teacher_job: Job
) -> tuple[list[Sample], list[str]]:
    with session_scope(database) as s:
        questions = split_questions(s, dataset.id, config.data.split, config.data.train_limit)  # type: ignore[arg-type]
        samples = distill_samples(
            s,
            teacher_job,
            dataset,
            config.data.split,
            correct_only=config.teacher.require_correct,
            question_ids={q.id for q in questions},  # type: ignore[misc]
        )
    what = "correct " if config.teacher.require_correct else ""
    notes = [f"{len(samples)} {what}teacher rationales of job {teacher_job.id} ({teacher_job.label or 'teacher'})"]
    if not config.teacher.base_url:
        notes.append("no teacher.base_url: distilling from the rationales already in the workspace")
    if not samples:
        raise UserError(
            f"teacher job {teacher_job.id} has no {what}rationales for the {len(questions)} questions of split "
            f"{config.data.split!r}"
        )
    return samples, notes


def self_train_job_for(database: Engine, config: ExperimentConfig, dataset: Dataset) -> Job:
    """The self-train job SERT+RD starts from: the one this config's self-train stage would reuse, else the
    newest completed self-train job of the dataset and student."""
    try:
        plan = sert_plan(database, config, dataset)
        fp = train_fingerprint(config, plan, dataset)
    except UserError:
        fp = None
    with session_scope(database) as s:
        jobs = s.exec(
            select(Job)
            .where(Job.kind == "self-train", Job.dataset_id == dataset.id, Job.status == "completed")
            .order_by(Job.id.desc())  # type: ignore[union-attr]
        ).all()
    exact = [j for j in jobs if j.fingerprint == fp]
    same_student = [j for j in jobs if (j.config.get("student") or {}).get("model") == config.student.model]
    for job in exact + same_student:
        if checkpoints.final_checkpoint(database, job.id) is not None:  # type: ignore[arg-type]
            return job
    raise UserError(
        "train.distill_from = 'self-train' needs a completed self-train job: run --stage self-train first "
        "(or set train.distill_from = 'base' for plain RD)"
    )


def distill_plan(database: Engine, config: ExperimentConfig, dataset: Dataset) -> TrainingPlan:
    teacher_job = teacher_job_for(database, config, dataset)
    samples, notes = teacher_samples(database, config, dataset, teacher_job)
    if config.train.distill_from == "base":
        start = {"kind": "base", "teacher_job": teacher_job.id}
        return TrainingPlan("distill", vocab.RD, samples, teacher_job.id, config.student.model, start, notes)
    sert_job = self_train_job_for(database, config, dataset)
    final = checkpoints.final_checkpoint(database, sert_job.id)  # type: ignore[arg-type]
    assert final is not None
    start = {"kind": "self-train", "job": sert_job.id, "checkpoint": final.path, "teacher_job": teacher_job.id}
    notes.append(f"starting from the final checkpoint of self-train job {sert_job.id} ({final.path})")
    return TrainingPlan("distill", vocab.SERT_RD, samples, sert_job.id, final.path, start, notes)


def finetune_plan(database: Engine, config: ExperimentConfig, dataset: Dataset) -> TrainingPlan:
    with session_scope(database) as s:
        questions = split_questions(s, dataset.id, config.data.split, config.data.train_limit)  # type: ignore[arg-type]
    if not questions:
        raise UserError(f"dataset {dataset.name!r} has no questions in split {config.data.split!r}")
    samples = finetune_samples(questions, dataset)
    return TrainingPlan("finetune", vocab.FINETUNE, samples, None, config.student.model, {"kind": "base"})


# -- running a plan -----------------------------------------------------------------------------------------
def run_plan(database: Engine, config: ExperimentConfig, dataset: Dataset, plan: TrainingPlan, echo: Echo) -> Job:
    from engine.tracking import check_report_to

    check_report_to(config)  # a writer [log] asks for and that is missing: one error before the job starts
    fp = train_fingerprint(config, plan, dataset)
    job, done = find_or_create_job(
        database, plan.kind, fp, config, echo, dataset_id=dataset.id, parent_id=plan.parent_id
    )
    assert job.id is not None
    if job.label != plan.label or (plan.round > 1 and job.summary.get(vocab.ROUND_KEY) != plan.round):
        with session_scope(database) as s:
            row = s.get(Job, job.id)
            assert row is not None
            row.label = plan.label
            if plan.round > 1:  # the lineage label ("SERT r2") reads it, also before the job completes
                row.summary = {**row.summary, vocab.ROUND_KEY: plan.round}
    if done:
        return reload_job(database, job.id)
    if is_distributed():  # inside `accelerate launch`: every rank trains, this one (rank 0) writes
        from engine.training.accelerate_engine import main_train_body

        body = main_train_body(database, job.id, config, plan)
    else:
        body = train_body(database, job.id, config, plan)
    run_job(JobContext(database, job.id, echo), body)
    return reload_job(database, job.id)


def train_body(database: Engine, job_id: int, config: ExperimentConfig, plan: TrainingPlan):
    def body(ctx: JobContext) -> dict:
        from transformers.utils import logging as hf_logging

        from engine.cuda import maybe_compile
        from engine.models import resolve_device
        from engine.training.loop import database_cancel, fit, load_samples, load_start, resume_from
        from engine.training.trainer import SFTEngine

        hf_logging.disable_progress_bar()  # the job's own progress lines are what the app and CLI show
        cfg = config.train
        for note in plan.notes:
            ctx.log(note)
        device = resolve_device(config.student.device)
        checkpoints.clean_stray(database, job_id)
        resume = checkpoints.latest_resumable(database, job_id)
        model, tokenizer = load_start(plan, config, device, resume.path if resume else None)
        data = load_samples(plan, config, tokenizer, ctx.log)
        sft = SFTEngine(model, data, cfg, device=device, pad_id=tokenizer.pad_token_id)
        maybe_compile(model, cfg.compile, device, sft.total_steps, ctx.log)  # CUDA only, where it pays
        if resume is not None:
            resume_from(sft, resume.path, ctx.log)
        mode = "LoRA" if cfg.lora else "full fine-tuning"
        ctx.log(
            f"{plan.kind} ({plan.label}): {len(data)} samples, {sft.total_steps} steps of {cfg.batch_size}, {mode}, "
            f"start {plan.start_model}, device {device}, bf16 autocast {'on' if sft.bf16 else 'off'}"
        )
        return fit(
            sft,
            database=database,
            job_id=job_id,
            plan=plan,
            config=config,
            tokenizer=tokenizer,
            ctx=ctx,
            log=ctx.log,
            model_to_save=lambda: model,
            cancel_requested=database_cancel(ctx),
        )

    return body


# -- the stages ---------------------------------------------------------------------------------------------
def run_self_train(database: Engine, config: ExperimentConfig, echo: Echo) -> list[Job]:
    dataset = config_dataset(database, config)
    return [run_plan(database, config, dataset, sert_plan(database, config, dataset), echo)]


def run_distill(database: Engine, config: ExperimentConfig, echo: Echo) -> list[Job]:
    dataset = config_dataset(database, config)
    return [run_plan(database, config, dataset, distill_plan(database, config, dataset), echo)]


def run_finetune(database: Engine, config: ExperimentConfig, echo: Echo) -> list[Job]:
    dataset = config_dataset(database, config)
    return [run_plan(database, config, dataset, finetune_plan(database, config, dataset), echo)]
