"""Stage ``filter``: the paper's filters over the paths of the config's sample job.

The paths belong to the sample job; a filter job (parent = that sample job) judges them from the stored texts
and numbers (no model) and keeps its own verdicts, passed and selected per path (``filter_verdicts``), in one
transaction. Other settings make another filter job with its own rows: two filter jobs of one sample job never
overwrite each other, and a completed one is reused whatever ran since. The path rows also carry a display copy
(verdicts, passed, selected; and the parsed answer and correctness, which no setting changes) of the sample job's
current filter job, the one its summary names (``filter_job``): the job that ran last, or the one a reused
``run --stage filter`` / the explorer's apply showed again (db.filter_verdicts.show).
With ``filters.select = "gold_likelihood"`` the student first scores the survivors that have no ``gold_logp`` yet
(:mod:`engine.filtering.gold`; the scores are written as they come, so a killed job keeps them).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import select

from db import filter_verdicts
from db.errors import UserError
from db.models import Dataset, Job
from db.session import session_scope
from db.vocabulary import SAMPLE
from engine.answers import answer_spec
from engine.config import ExperimentConfig, FiltersConfig, config_from_dict
from engine.filtering import rules as filters
from engine.jobs import JobContext, config_dataset, find_or_create_job, fingerprint, reload_job, run_job
from engine.sampling.stage import sample_fingerprint


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
    del settings["use_choices"]  # what training reads of the people's choices, not what the filters judge
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
            counts = filters.apply_to_job(s, parent.id, cfg, spec, job_id)  # type: ignore[arg-type]
        ctx.progress(counts["questions"], counts["questions"], "questions", force=True)
        removed = ", ".join(f"{rule} {n}" for rule, n in counts["removed"].items())
        ctx.log(
            f"{counts['paths']} paths of {counts['questions']} questions; removed: {removed}; "
            f"selected {counts['selected']}"
        )
        return {"sample_job": parent.id, "filters": cfg.model_dump(), **counts}

    return body


def has_own_verdicts(database: Engine, job: Job, parent: Job) -> bool:
    """Whether filter job ``job`` has its verdicts stored (or ``parent`` has no path of its own to judge)."""
    from sqlmodel import func

    from db.models import Path

    assert job.id is not None
    with session_scope(database) as s:
        if filter_verdicts.count(s, job.id):
            return True
        return not s.exec(
            select(func.count()).select_from(Path).where(Path.job_id == parent.id, Path.source == "self")
        ).one()


def filter_job_for(database: Engine, config: ExperimentConfig, sample_job: Job) -> Job:
    """The filter job of ``config`` over ``sample_job``: the newest completed one with its fingerprint (whatever
    filter job ran since: each keeps its own verdicts). A UserError says to run the filter stage where none is."""
    assert sample_job.id is not None
    fp = filter_fingerprint(config, sample_job.id)
    with session_scope(database) as s:
        jobs = s.exec(
            select(Job)
            .where(Job.kind == "filter", Job.fingerprint == fp, Job.parent_id == sample_job.id)
            .order_by(Job.id.desc())  # type: ignore[union-attr]
        ).all()
    for job in jobs:
        if job.status == "completed" and has_own_verdicts(database, job, sample_job):
            return job
    if jobs and jobs[0].status != "completed":
        raise UserError(
            f"filter job {jobs[0].id} of this config's filter settings is {jobs[0].status}, not completed: "
            "run --stage filter first"
        )
    if jobs:
        raise UserError(
            f"filter job {jobs[0].id} of this config's filter settings has no verdicts stored (a workspace of an "
            "older sert-tui kept only the newest filter job's): run --stage filter first"
        )
    raise UserError(
        f"the paths of sample job {sample_job.id} have no filter job with this config's filter settings: "
        "run --stage filter first"
    )


def run_filter(database: Engine, config: ExperimentConfig, echo: Callable[[str], None]) -> list[Job]:
    dataset = config_dataset(database, config)
    parent = sample_job_for(database, config, dataset)
    return filter_sample_job(database, config, dataset, parent, echo)


def refilter(database: Engine, sample_job_id: int, settings: FiltersConfig, echo: Callable[[str], None]) -> Job:
    """A filter job over the paths of ``sample_job_id`` with ``settings`` (the filter explorer's apply).

    Its config is the sample job's own with these ``filters``, so it is the job ``run --stage filter`` would
    run for that config. People's decisions stay on the paths; the paths show its verdicts (the sample job names
    it: ``filter_job``). Training follows the filter job of the config it trains with."""
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
    """Find (a completed one), resume or create the filter job of ``config`` over ``parent``, and run it; the
    paths then show its verdicts (a reused job's are copied back to the path rows where another's were shown)."""
    assert parent.id is not None
    fp = filter_fingerprint(config, parent.id)
    job, done = find_or_create_job(
        database,
        "filter",
        fp,
        config,
        echo,
        # A completed filter job keeps its own verdicts: reused, unless it has none stored (its verdicts were
        # overwritten on the paths before sert-tui kept them per filter job).
        reuse_completed=lambda j: has_own_verdicts(database, j, parent),
        dataset_id=dataset.id,
        parent_id=parent.id,
    )
    if done:
        assert job.id is not None
        with session_scope(database) as s:
            if filter_verdicts.current(s, parent.id) != job.id:
                filter_verdicts.show(s, parent.id, job.id)
                echo(f"job {job.id} filter: its verdicts are shown on the paths of sample job {parent.id} again")
        return [reload_job(database, job.id)]
    assert job.id is not None
    run_job(JobContext(database, job.id, echo), filter_body(database, job.id, parent, config, dataset))
    return [reload_job(database, job.id)]
