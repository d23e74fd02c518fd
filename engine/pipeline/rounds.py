"""Self-training rounds (``sert-tui run CONFIG --stage self-train --rounds N``) and the embedded default loop
(``sert-tui run --default``, the app's ``d``).

Round 1 is the self-train chain of the config: sample → filter → self-train (SERT) → eval of its model. Round
r > 1 samples with the final checkpoint of round r - 1 as the student (the ``student.model`` of its sample and
filter jobs is that checkpoint), filters, and trains starting from that checkpoint, as STaR and ReST-EM iterate;
its model is labelled "SERT r2", "SERT r3", ... With ``eval.baselines`` the base model is evaluated zero-shot
once, beside round 1.

Every job is found or created by its fingerprint, as in every stage: round r's sample job by its student (the
parent checkpoint), its training job by its round, parent filter job and start checkpoint. Run again, the chain
skips what is complete and resumes the job it was in, in the round it was in; a job that did not complete
(cancelled) stops the chain, its work kept. The evaluation is the eval stage's own (``evaluate``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from db import vocabulary as vocab
from db.decision_journal import apply_pending
from db.errors import UserError
from db.models import Evaluation, Job
from db.session import session_scope
from engine.config import ExperimentConfig

Echo = Callable[[str], None]


@dataclass
class Round:
    """The jobs of one self-training round, as far as the chain got."""

    round: int
    label: str
    start_model: str  # the round's sampling student and training start: the base model, or round r-1's checkpoint
    sample: Job | None = None
    filter: Job | None = None
    train: Job | None = None
    eval: Job | None = None

    @property
    def jobs(self) -> list[Job]:
        return [j for j in (self.sample, self.filter, self.train, self.eval) if j is not None]


@dataclass
class Loop:
    """What :func:`run_rounds` ran: the rounds, the zero-shot evaluation, every job in the order it ran."""

    rounds: list[Round] = field(default_factory=list)
    zero_shot: Job | None = None
    jobs: list[Job] = field(default_factory=list)

    @property
    def completed(self) -> bool:
        return all(j.status == "completed" for j in self.jobs)


def round_config(config: ExperimentConfig, student_model: str) -> ExperimentConfig:
    """The config a round samples and filters with: the experiment's, with the round's student."""
    copy = config.model_copy(deep=True)
    copy.student.model = student_model
    return copy


def _elapsed(t0: float) -> str:
    seconds = int(time.monotonic() - t0)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def run_rounds(database: Engine, config: ExperimentConfig, rounds: int, echo: Echo, *, name: str = "rounds") -> Loop:
    """Rounds 1..``rounds`` of self-training, each evaluated; the zero-shot base model too with ``eval.baselines``."""
    from engine.evaluation.stage import base_target, evaluate, job_target
    from engine.filtering.stage import run_filter
    from engine.jobs import config_dataset
    from engine.sampling.stage import run_sample
    from engine.training import checkpoints
    from engine.training.stage import run_plan, sert_plan

    if rounds < 1:
        raise UserError(f"--rounds: {rounds} is not a number of rounds (1 or more)")
    apply_pending(database, echo)  # the rounds self-train on people's decisions: the journal's too
    dataset = config_dataset(database, config)
    loop = Loop()
    steps = 4 * rounds + (1 if config.eval.baselines else 0)
    t0 = time.monotonic()

    def step(what: str) -> None:
        done = len(loop.jobs)
        echo(f"{name}: step {done + 1} of {steps}: {what} (elapsed {_elapsed(t0)})")

    def ran(jobs: list[Job]) -> bool:
        """Record the jobs of a step; False (stop) when one did not complete."""
        loop.jobs.extend(jobs)
        bad = [j for j in jobs if j.status != "completed"]
        if bad:
            echo(f"{name}: stopping after job {bad[0].id} {bad[0].kind} ({bad[0].status}); run it again to resume")
        return not bad

    start = config.student.model
    previous: Job | None = None
    for r in range(1, rounds + 1):
        label = vocab.round_label(vocab.SERT, r)
        current = Round(r, label, start)
        loop.rounds.append(current)
        rc = config if r == 1 else round_config(config, start)
        where = f"round {r} of {rounds}"
        step(f"{where}: sample with {'the base model' if r == 1 else start}")
        (current.sample,) = run_sample(database, rc, echo)
        if not ran([current.sample]):
            return loop
        step(f"{where}: filter")
        (current.filter,) = run_filter(database, rc, echo)
        if not ran([current.filter]):
            return loop
        step(f"{where}: self-train ({label})")
        plan = sert_plan(database, rc, dataset)
        if r > 1:
            assert previous is not None
            plan = replace(
                plan,
                label=label,
                round=r,
                start={"kind": "self-train", "job": previous.id, "checkpoint": start, "round": r - 1},
                notes=[*plan.notes, f"round {r}: starting from the final checkpoint of job {previous.id} ({start})"],
            )
        current.train = run_plan(database, config, dataset, plan, echo)
        if not ran([current.train]):
            return loop
        step(f"{where}: eval ({label})")
        current.eval = evaluate(database, config, dataset, job_target(database, current.train), echo)
        if not ran([current.eval]):
            return loop
        if r == 1 and config.eval.baselines:
            step(f"eval ({vocab.ZERO_SHOT})")
            loop.zero_shot = evaluate(database, config, dataset, base_target(config), echo)
            if not ran([loop.zero_shot]):
                return loop
        final = checkpoints.final_checkpoint(database, current.train.id)  # type: ignore[arg-type]
        if final is None:
            raise UserError(f"self-train job {current.train.id} has no final checkpoint to start round {r + 1} from")
        previous, start = current.train, final.path
    echo(f"{name}: done in {_elapsed(t0)}")
    return loop


def run_default(database: Engine, workspace: Path, echo: Echo, rounds: int = 1) -> tuple[Path, Loop]:
    """The embedded default: the config beside the workspace (written on first use), the generated dataset
    (generated on first use), then the loop: sample → filter → self-train → eval, the zero-shot base model too."""
    from engine.config import load_config
    from engine.pipeline.processes import (
        DEFAULT_DATASET,
        DEFAULT_TEST,
        DEFAULT_TRAIN,
        ensure_dataset,
        ensure_default_config,
    )

    path = ensure_default_config(workspace)
    config = load_config(path)
    echo(f"default: config {path} (edit it to change what the default runs)")
    name = config.data.dataset or DEFAULT_DATASET
    task = ensure_dataset(database, name)
    if task is not None:
        echo(f"generated dataset {name!r} (reasoning-gym {task}, {DEFAULT_TRAIN} train / {DEFAULT_TEST} test)")
    return path, run_rounds(database, config, rounds, echo, name="default")


def accuracy_of(database: Engine, eval_job: Job | None) -> dict[str, Any] | None:
    """The evaluation of an eval job as the report shows it: label, n, Acc and its 95% Wilson interval."""
    from engine.evaluation.stats import share_interval

    if eval_job is None:
        return None
    with session_scope(database) as s:
        row = s.exec(select(Evaluation).where(Evaluation.job_id == eval_job.id)).first()
    if row is None:
        return None
    ci = share_interval(row.acc, row.n or 0)
    return {
        "label": row.label,
        "evaluation": row.id,
        "n": row.n,
        "acc": row.acc,
        "acc_ci": list(ci) if ci else None,
        "fmt": row.fmt,
    }


def loop_document(database: Engine, loop: Loop) -> dict[str, Any]:
    """The rounds and accuracies of ``run --rounds/--default --json`` (beside its ``jobs``)."""
    from engine.training import checkpoints

    rounds = []
    for r in loop.rounds:
        final = checkpoints.final_checkpoint(database, r.train.id) if r.train is not None else None  # type: ignore[arg-type]
        rounds.append(
            {
                "round": r.round,
                "label": r.label,
                "start_model": r.start_model,
                "jobs": {
                    vocab.SAMPLE: r.sample.id if r.sample else None,
                    vocab.FILTER: r.filter.id if r.filter else None,
                    vocab.SELF_TRAIN: r.train.id if r.train else None,
                    vocab.EVAL: r.eval.id if r.eval else None,
                },
                "checkpoint": final.path if final is not None else None,
                "accuracy": accuracy_of(database, r.eval),
            }
        )
    zero = {"job": loop.zero_shot.id, "accuracy": accuracy_of(database, loop.zero_shot)} if loop.zero_shot else None
    return {"rounds": rounds, "zero_shot": zero}


def outcome_lines(database: Engine, dataset_name: str) -> list[str]:
    """What a finished default loop (or any SERT run beside zero-shot) means, in plain words: what was trained,
    how SERT compares with the zero-shot base model on the same questions (the paired difference with its 95%
    interval, clustered by question: engine.evaluation.stats.clustered_compare), what those numbers can say at
    this size, and where to go next. Reads the newest completed SERT and zero-shot evaluations of the dataset."""
    from sqlmodel import col

    from db.models import Dataset, Question
    from engine.evaluation.report import outcomes
    from engine.evaluation.stats import clustered_compare, fmt_interval, majority, wilson_interval

    with session_scope(database) as s:
        rows = s.exec(
            select(Evaluation.id, Evaluation.label)
            .join(Job, col(Job.id) == Evaluation.job_id)
            .join(Dataset, col(Dataset.id) == Evaluation.dataset_id)
            .where(
                Job.status == "completed",
                Dataset.name == dataset_name,
                col(Evaluation.label).in_([vocab.SERT, vocab.ZERO_SHOT]),
            )
            .order_by(col(Evaluation.id).desc())
        ).all()
        newest: dict[str, int] = {}
        for eid, label in rows:
            newest.setdefault(label, eid)  # type: ignore[arg-type]
        if vocab.SERT not in newest or vocab.ZERO_SHOT not in newest:
            return [f"no completed SERT and zero-shot evaluations of {dataset_name!r} to compare yet"]
        conn = s.connection()
        a, b = outcomes(conn, newest[vocab.SERT]), outcomes(conn, newest[vocab.ZERO_SHOT])
        golds = {
            q: g.strip().lower()
            for q, g in conn.execute(select(Question.id, Question.answer).where(col(Question.id).in_(list(a))))
        }
    answer, count, total = majority(golds.values())
    c = clustered_compare({q: [ok] for q, ok in a.items()}, {q: [ok] for q, ok in b.items()})
    if not c.n:
        return [f"the SERT and zero-shot evaluations of {dataset_name!r} share no question to compare"]
    sert = fmt_interval(sum(a.values()) / len(a), wilson_interval(sum(a.values()), len(a)))
    zero = fmt_interval(sum(b.values()) / len(b), wilson_interval(sum(b.values()), len(b)))
    lo, hi = 100 * c.diff_ci[0], 100 * c.diff_ci[1]
    if c.diff_ci[0] > 0:
        meaning = "SERT beat zero-shot on these questions: the interval lies above 0."
    elif c.diff_ci[1] < 0:
        meaning = "SERT did worse than zero-shot on these questions: the interval lies below 0."
    else:
        meaning = (
            f"the interval holds 0, so at {c.n} questions this run cannot tell SERT from zero-shot; a few points "
            "either way are noise."
        )
    if total:
        # the constant predictor: what the set's most common answer alone scores on the same questions
        m = clustered_compare({q: [ok] for q, ok in a.items()}, {q: [golds.get(q) == answer] for q in a})
        prior = (
            f" Answering {answer!r} to every question would score "
            f"{fmt_interval(count / total, wilson_interval(count, total))}%; SERT - that "
            f"{100 * m.diff:+.1f} points [{100 * m.diff_ci[0]:+.1f}, {100 * m.diff_ci[1]:+.1f}]"
        )
        if m.diff_ci[0] > 0:
            prior += ", above it too."
        elif c.diff_ci[0] > 0:
            prior += (
                ": not above it, so much of SERT's gain over zero-shot may be the answer's format and the set's most "
                "common answer rather than better reasoning."
            )
        else:
            prior += "."
        meaning += prior
    return [
        f"What was trained: the bundled student, self-trained (SERT) on its own reasoning paths of {dataset_name!r}"
        " that the filters selected (and those you accepted by hand).",
        f"What it scored on the same {c.n} test questions: SERT {sert}%, zero-shot {zero}% (95% intervals); "
        f"SERT - zero-shot {100 * c.diff:+.1f} points [{lo:+.1f}, {hi:+.1f}], p = {c.p_value:.2g}.",
        f"What it means: {meaning} It is one seed of a 135M student on a small set: a claim needs more questions "
        "and seeds (sert-tui study, docs/results.md).",
        "Where to go next: the paths (enter on the sample job) and the review queue to choose better paths by hand, "
        "the filter explorer (w) to see what the filters throw away, or a bigger config (o, or sert-tui config init).",
    ]
