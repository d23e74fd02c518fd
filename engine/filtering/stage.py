"""Stage ``filter``: the paper's filters over the paths of the config's sample job.

The paths belong to the sample job; a filter job (parent = that sample job) rewrites their verdicts,
passed, selected, answer and correct in one transaction, from the stored texts and numbers (no model) -- except
with ``filters.select = "gold_likelihood"``: then the student first scores the survivors that have no
``gold_logp`` yet (:mod:`engine.filtering.gold`; the scores are written as they come, so a killed job keeps them).
Re-running with other thresholds creates a new filter job; the sample job's summary names the filter job
whose verdicts its paths carry now (``filter_job``).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import select

from db.errors import UserError
from db.models import Dataset, Job
from db.session import session_scope
from db.vocabulary import SAMPLE
from engine.config import ExperimentConfig, FiltersConfig, config_from_dict
from engine.filtering import rules as filters
from engine.jobs import JobContext, config_dataset, find_or_create_job, fingerprint, reload_job, run_job
from engine.sampling.stage import answer_spec, sample_fingerprint


def sample_job_for(database: Engine, config: ExperimentConfig, dataset: Dataset) -> Job:
    """The newest completed sample job of this config's student, sampling and data settings."""
    fp = sample_fingerprint(config, dataset)
    with session_scope(database) as s:
        job = s.exec(
            select(Job)
            .where(Job.kind == "sample", Job.fingerprint == fp, Job.status == "completed")
            .order_by(Job.id.desc())  # type: ignore[union-attr]
        ).first()
    if job is None:
        with session_scope(database) as s:
            unfinished = s.exec(
                select(Job).where(Job.kind == "sample", Job.fingerprint == fp).order_by(Job.id.desc())  # type: ignore[union-attr]
            ).first()
        if unfinished is not None:
            raise UserError(
                f"sample job {unfinished.id} of this config is {unfinished.status}, not completed: "
                "run --stage sample first to finish it"
            )
        raise UserError(f"no completed sample job for this config (dataset {dataset.name!r}): run --stage sample first")
    return job


#: Filter settings added after filter jobs existed: at their defaults they leave the fingerprint out, so a job of
#: an older sert-tui is found and resumed as before; set to anything else they make a new job. ``seed`` is in it
#: whenever ``select = "random"`` reads it, even at its default.
LATER_SETTINGS = ("min_confidence", "select", "seed")


def filter_fingerprint(config: ExperimentConfig, parent_id: int) -> str:
    settings = config.filters.model_dump()
    random_pick = settings["select"] == "random"
    for key in LATER_SETTINGS:
        if key == "seed" and random_pick:
            continue
        if settings[key] == FiltersConfig.model_fields[key].default:
            del settings[key]
    return fingerprint("filter", {"filters": settings, "parent": parent_id})


def filter_body(database: Engine, job_id: int, parent: Job, config: ExperimentConfig, dataset: Dataset):
    spec = answer_spec(dataset)

    def body(ctx: JobContext) -> dict:
        cfg = config.filters
        ctx.log(
            f"filtering the paths of sample job {parent.id}: min_tokens {cfg.min_tokens}, max_rep2 {cfg.max_rep2}, "
            f"min_perplexity {cfg.min_perplexity}, min_confidence {cfg.min_confidence}, "
            f"require_correct {cfg.require_correct}, select {cfg.select}"
            + (f" (seed {cfg.seed})" if cfg.select == "random" else "")
        )
        if cfg.select == "gold_likelihood":
            from engine.filtering.gold import score_survivors

            score_survivors(database, parent.id, config, dataset.answer_type, spec, ctx)  # type: ignore[arg-type]
        with session_scope(database) as s:
            counts = filters.apply_to_job(s, parent.id, cfg, spec)  # type: ignore[arg-type]
            sample_job = s.get(Job, parent.id)
            assert sample_job is not None
            sample_job.summary = {**sample_job.summary, "filter_job": job_id}
        ctx.progress(counts["questions"], counts["questions"], "questions", force=True)
        removed = ", ".join(f"{rule} {n}" for rule, n in counts["removed"].items())
        ctx.log(
            f"{counts['paths']} paths of {counts['questions']} questions; removed: {removed}; "
            f"selected {counts['selected']}"
        )
        return {"sample_job": parent.id, "filters": cfg.model_dump(), **counts}

    return body


def run_filter(database: Engine, config: ExperimentConfig, echo: Callable[[str], None]) -> list[Job]:
    dataset = config_dataset(database, config)
    parent = sample_job_for(database, config, dataset)
    return filter_sample_job(database, config, dataset, parent, echo)


def refilter(database: Engine, sample_job_id: int, settings: FiltersConfig, echo: Callable[[str], None]) -> Job:
    """A filter job over the paths of ``sample_job_id`` with ``settings`` (the filter explorer's apply).

    Its config is the sample job's own with these ``filters``, so it is the job ``run --stage filter`` would
    run for that config. People's decisions stay on the paths, and training follows the new filter job (the
    sample job names it: ``filter_job``)."""
    with session_scope(database) as s:
        parent = s.get(Job, sample_job_id)
        if parent is None or parent.kind != SAMPLE:
            raise UserError(f"job {sample_job_id} is not a sample job")
        if parent.status != "completed":
            raise UserError(
                f"sample job {sample_job_id} is {parent.status}, not completed: apply the filters when it has finished"
            )
        dataset = s.get(Dataset, parent.dataset_id)
        if dataset is None:
            raise UserError(f"sample job {sample_job_id}: its dataset is gone")
    source = f"the config of sample job {sample_job_id}"
    config = config_from_dict({**(parent.config or {}), "filters": settings.model_dump()}, source)
    return filter_sample_job(database, config, dataset, parent, echo)[0]


def filter_sample_job(
    database: Engine, config: ExperimentConfig, dataset: Dataset, parent: Job, echo: Callable[[str], None]
) -> list[Job]:
    """Find (a current completed one), resume or create the filter job of ``config`` over ``parent``, and run it."""
    assert parent.id is not None
    fp = filter_fingerprint(config, parent.id)
    job, done = find_or_create_job(
        database,
        "filter",
        fp,
        config,
        echo,
        # A completed filter job is current only while the paths still carry its verdicts.
        reuse_completed=lambda j: parent.summary.get("filter_job") == j.id,
        dataset_id=dataset.id,
        parent_id=parent.id,
    )
    if done:
        return [job]
    assert job.id is not None
    run_job(JobContext(database, job.id, echo), filter_body(database, job.id, parent, config, dataset))
    return [reload_job(database, job.id)]
