"""Exports: a stage's training set, or a job's paths, as prompt/completion records for other trainers.

Each record is ``{"prompt", "completion", ...}`` -- the prompt-completion shape TRL's ``SFTTrainer`` reads
(the prompt is masked out of the loss, as here) -- with the question's index in its source dataset and, for
paths, the path's id, branch, sample, selection and decision beside it. A training set is exactly what
``run --stage self-train|distill|finetune`` would train on for the same config (the paths the config's own filter
job selected, found by its filter fingerprint, and not rejected, plus accepted paths; correct teacher rationales;
answers only). Two formats: JSONL (one record a line) and
a Hugging Face ``datasets`` folder (``save_to_disk``, for ``datasets.load_from_disk``).

Nothing is overwritten unless asked; files are owner-only and appear whole (:mod:`engine.files`).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from db.errors import UserError
from db.vocabulary import TRAINING_KINDS
from engine.files import new_file, private_dir, refuse_existing

if TYPE_CHECKING:  # the database and model modules load when an export runs, not when the CLI starts
    from sqlalchemy.engine import Engine

    from engine.config import ExperimentConfig
    from engine.training.datasets import Sample

FORMATS = ("jsonl", "dataset")
SETS = TRAINING_KINDS


def training_set(database: Engine, config: ExperimentConfig, kind: str) -> tuple[list[Sample], list[str]]:
    """The samples ``--stage kind`` trains on for ``config`` and the notes the stage would log."""
    from engine.jobs import config_dataset
    from engine.training.stage import distill_plan, finetune_plan, sert_plan

    plans = {"self-train": sert_plan, "distill": distill_plan, "finetune": finetune_plan}
    if kind not in plans:
        raise UserError(f"unknown training set {kind!r} ({', '.join(SETS)})")
    plan = plans[kind](database, config, config_dataset(database, config))
    return plan.samples, plan.notes


def sample_records(database: Engine, samples: list[Sample]) -> list[dict[str, Any]]:
    from sqlmodel import select

    from db.models import Question
    from db.session import session_scope

    ids = {s.question_id for s in samples if s.question_id is not None}
    with session_scope(database) as s:
        index = dict(s.exec(select(Question.id, Question.index).where(Question.id.in_(ids))).all())  # type: ignore[union-attr]
    return [
        {
            "prompt": sample.prompt,
            "completion": sample.completion,
            "question_index": index.get(sample.question_id),
            **({"path_id": sample.path_id} if sample.path_id is not None else {}),
        }
        for sample in samples
    ]


def path_records(database: Engine, job_id: int, decision: str | None = None, selected: bool = False) -> list[dict]:
    """A sample (or filter) job's paths, as ``paths list`` chooses them, in the SERT training format: a filter
    job's with its own stored selection (``filter_verdicts``), whichever filter job the path rows show now."""
    from sqlmodel import select

    from db.models import Dataset, Question
    from db.session import session_scope
    from engine.path_views import own_verdicts, path_rows, paths_job
    from engine.prompts import training_prompt
    from engine.training.datasets import answer_surface, sert_completion

    with session_scope(database) as s:
        job = paths_job(s, job_id)
        rows = path_rows(s, job.id, decision, selected, own_verdicts(s, job_id))
        dataset = s.get(Dataset, job.dataset_id)
        questions = {q.index: q for q in s.exec(select(Question).where(Question.dataset_id == dataset.id)).all()}
        answer_type = dataset.answer_type
    return [
        {
            "prompt": training_prompt(questions[r["question_index"]].text),
            "completion": sert_completion(
                r["text"], answer_surface(questions[r["question_index"]].answer, answer_type)
            ),
            "question_index": r["question_index"],
            "path_id": r["id"],
            "branch": r["branch"],
            "sample": r["sample"],
            "selected": r["selected"],
            "decision": r["decision"],
        }
        for r in rows
    ]


def write_records(records: list[dict[str, Any]], out: Path | str, fmt: str = "jsonl", *, force: bool = False) -> Path:
    """Write ``records`` to ``out`` as JSONL or as a ``datasets`` folder."""
    out = Path(out)
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r} ({', '.join(FORMATS)})")
    refuse_existing(out, force)
    if fmt == "jsonl":
        with new_file(out, force=force) as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return out
    import datasets

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        private_dir(staging)
        datasets.Dataset.from_list(records).save_to_disk(str(staging / "data"))
        if out.exists():  # --force: the old folder goes only once the new one is complete
            out.rename(staging / "old")
        try:
            (staging / "data").rename(out)
        except OSError:  # a folder of that name appeared meanwhile: it stays
            raise UserError(f"{out}: already exists (use --force to overwrite)") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


METRIC_FORMATS = ("csv", "jsonl")
METRIC_COLUMNS = ("step", "name", "value", "time")


def metric_records(database: Engine, job_id: int) -> list[dict[str, Any]]:
    """Every metric row of a job (``step, name, value, time``; time in UTC, ISO 8601), by step and name."""
    from sqlmodel import select

    from db.models import Job, Metric
    from db.session import session_scope

    with session_scope(database) as s:
        if s.get(Job, job_id) is None:
            raise UserError(f"no job {job_id} in this workspace (sert-tui jobs list)")
        rows = s.exec(select(Metric).where(Metric.job_id == job_id).order_by(Metric.step, Metric.name)).all()  # type: ignore[arg-type]
        return [{"step": r.step, "name": r.name, "value": r.value, "time": r.time.isoformat()} for r in rows]


def render_metrics(records: list[dict[str, Any]], fmt: str) -> str:
    """``records`` of :func:`metric_records` as CSV (with a header line) or JSONL."""
    if fmt == "jsonl":
        return "".join(json.dumps(r) + "\n" for r in records)
    if fmt != "csv":
        raise UserError(f"unknown metrics format {fmt!r} ({', '.join(METRIC_FORMATS)})")
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=METRIC_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue()
