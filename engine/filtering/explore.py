"""What-if filtering: the counts a set of thresholds would give on a sample job's stored paths, writing nothing.

Behind the filter explorer screen and ``sert-tui report filters --job N --set filters.min_perplexity=3``. The
rules are pure functions of each path's stored text and numbers, so the same judge as the filter stage runs
again on the stored rows with other settings. Per rule, in the order applied: the paths it removes (that
survived the rules before it), and the paths and questions left after it, with how many of those paths are
correct; then the selection (one path per question) and how many selected paths are correct.

What each rule throws away (:func:`removal_step`): per rule, the correct paths it removes beside the incorrect ones,
and the share of correct paths among the removed and among the kept (kept = the paths left after it); a path
without a parsed answer counts as incorrect. The selection is the last such line (``selection``: removed = the
survivors not selected, kept = the selected). :data:`SAME_RATE` says how to read it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from db.errors import UserError
from db.models import Dataset, Job
from db.vocabulary import CONFIDENCE, FILTER, LENGTH, PERPLEXITY, REPETITION, SAMPLE
from engine.config import FiltersConfig, toml_value
from engine.filtering.rules import AnswerSpec, Fixed, JobInputs, PathInput

#: ``--set`` keys start with this section.
SECTION = "filters."


# -- the thresholds a person moves ------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """A rule with one threshold: its verdict key, its ``filters`` setting, the stored number it reads (a
    column of ``paths`` and a field of :class:`~engine.filtering.rules.PathInput`), and the explorer's step."""

    rule: str
    setting: str
    column: str
    label: str
    step: float  # one key press; shift: ten
    drops: str  # "below" (a minimum) or "above" (a maximum)
    fmt: str  # how a value is shown

    def bounds(self) -> tuple[float | None, float | None]:
        """The setting's own limits (``ge`` / ``le`` of :class:`FiltersConfig`)."""
        low = high = None
        for m in FiltersConfig.model_fields[self.setting].metadata:
            low = getattr(m, "ge", low)
            high = getattr(m, "le", high)
        return low, high

    def moved(self, value: float, steps: int) -> float:
        """``value`` moved by ``steps`` steps, kept within the setting's limits (an int setting stays an int)."""
        low, high = self.bounds()
        new = round(value + steps * self.step, 6)
        new = max(new, low) if low is not None else new
        new = min(new, high) if high is not None else new
        return int(round(new)) if FiltersConfig.model_fields[self.setting].annotation is int else float(new)


#: The filter explorer's histograms, in the order the rules apply. The one table of them: a row shows only
#: where its setting and its stored number exist (:func:`thresholds`), so confidence appears with
#: ``filters.min_confidence`` and ``Path.confidence``.
THRESHOLDS: tuple[Threshold, ...] = (
    Threshold(LENGTH, "min_tokens", "tokens", "length (tokens)", 1, "below", "d"),
    Threshold(REPETITION, "max_rep2", "rep2", "rep-2", 0.01, "above", ".2f"),
    Threshold(PERPLEXITY, "min_perplexity", "perplexity", "perplexity", 0.1, "below", ".2f"),
    Threshold(CONFIDENCE, "min_confidence", "confidence", "confidence", 0.01, "below", ".2f"),
)


def thresholds() -> list[Threshold]:
    """The rows of :data:`THRESHOLDS` this build has: the setting exists and the rules read the number."""
    read = {f.name for f in fields(PathInput)}
    return [t for t in THRESHOLDS if t.setting in FiltersConfig.model_fields and t.column in read]


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["filters.min_perplexity=3", ...]`` as ``{"min_perplexity": 3}``; values are TOML literals (a bare word
    is a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.startswith(SECTION) or len(key) == len(SECTION):
            raise UserError(f"--set {item!r}: expected filters.KEY=VALUE (e.g. filters.min_perplexity=3)")
        out[key[len(SECTION) :]] = toml_value(raw)
    return out


def settings_of(job: Job, overrides: dict[str, Any]) -> FiltersConfig:
    """The job's own filter settings (a filter job's frozen ones, a sample job's config) with ``overrides``."""
    return settings_over(dict((job.config or {}).get("filters") or {}), overrides)


def settings_over(base: dict[str, Any], overrides: dict[str, Any]) -> FiltersConfig:
    """``base`` (a job's ``filters`` section) with ``overrides``, validated; a bad key or value is a UserError."""
    unknown = sorted(set(overrides) - set(FiltersConfig.model_fields))
    if unknown:
        known = ", ".join(sorted(FiltersConfig.model_fields))
        raise UserError(f"--set filters.{unknown[0]}: no such setting (filters: {known})")
    from pydantic import ValidationError

    try:
        return FiltersConfig.model_validate({**base, **overrides})
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"--set filters.{where}: {err['msg']}") from None


#: The legend of the removal counts, wherever they are shown.
SAME_RATE = (
    "correct share of the removed vs the kept: a rule that removes correct and incorrect paths at the same rate "
    "selects nothing (both shares equal); a path without a parsed answer counts as incorrect"
)


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def removal_step(before: list, kept: list) -> dict[str, Any]:
    """What one rule (or the selection) throws away, of the paths ``before`` it, keeping ``kept``:
    ``removed_correct``, ``removed_incorrect``, ``correct_share_removed``, ``correct_share_kept`` (None when there
    is no path to share among). ``before``/``kept``: objects with ``correct`` (None counts as incorrect)."""
    correct_before = sum(bool(r.correct) for r in before)
    correct_kept = sum(bool(r.correct) for r in kept)
    removed = len(before) - len(kept)
    removed_correct = correct_before - correct_kept
    return {
        "removed_correct": removed_correct,
        "removed_incorrect": removed - removed_correct,
        "correct_share_removed": _share(removed_correct, removed),
        "correct_share_kept": _share(correct_kept, len(kept)),
    }


def what_if(session: Any, job_id: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The counts of the module docstring for the sample job of ``job_id`` under its settings + ``overrides``."""
    return load_job_paths(session, job_id).counts(overrides)


@dataclass
class JobPaths:
    """A sample job's stored paths, read once, with what of their judgement no threshold moves, so that the
    counts of other thresholds are computed in memory (the filter explorer recounts on every key)."""

    job_id: int  # the job whose filter settings the counts start from (``settings_of``)
    sample_id: int
    sample_status: str
    base: dict[str, Any]  # that job's ``filters`` section
    spec: AnswerSpec
    inputs: JobInputs
    fixed: dict[int, list[Fixed]]
    decisions: dict[str, int]  # the sample job's paths per human decision (accepted, rejected, ignored)
    current_filter: int | None = None  # the filter job whose verdicts the path rows show now (each keeps its own)

    def settings(self, overrides: dict[str, Any] | None = None) -> FiltersConfig:
        return settings_over(self.base, overrides or {})

    def values(self, column: str) -> list[float | None]:
        """One stored number of every path (a :class:`Threshold`'s ``column``), in the rules' order."""
        return [getattr(p, column, None) for _question, paths in self.inputs.values() for p in paths]

    def counts(self, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
        """What :func:`what_if` returns for these settings + ``overrides``."""
        from engine.filtering.rules import judge_inputs, rules_in_order

        cfg = self.settings(overrides)
        results, _counts = judge_inputs(self.inputs, cfg, self.spec, self.fixed)
        return count_survivors(results, cfg, rules_in_order(cfg), self.job_id, self.sample_id)


def load_job_paths(session: Any, job_id: int, current: bool = False) -> JobPaths:
    """The paths of the sample job of ``job_id`` (a sample or filter job), starting from ``job_id``'s settings;
    ``current``: for a sample job, from the settings of the filter job whose verdicts its paths carry now."""
    from sqlmodel import func, select

    from db.models import Path
    from engine.answers import answer_spec
    from engine.filtering.rules import fixed_part, job_inputs

    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"no job with id {job_id}")
    if job.kind not in (SAMPLE, FILTER):
        raise UserError(f"job {job_id} is a {job.kind!r} job; filter counts need a filter or sample job")
    sample = session.get(Job, job.parent_id) if job.kind == FILTER else job
    if sample is None:
        raise UserError(f"filter job {job_id}: its sample job is gone")
    filter_id = (sample.summary or {}).get("filter_job")
    if current and job.kind == SAMPLE:
        job = (session.get(Job, filter_id) if filter_id is not None else None) or job
    base = dict((job.config or {}).get("filters") or {})
    settings_over(base, {})  # a stored section that no longer validates is reported here, once
    spec = answer_spec(session.get(Dataset, sample.dataset_id))
    inputs = job_inputs(session, sample.id)
    fixed = {qid: [fixed_part(p, question, spec) for p in paths] for qid, (question, paths) in inputs.items()}
    decided = session.exec(
        select(Path.decision, func.count())
        .where(Path.job_id == sample.id, Path.decision.is_not(None))  # type: ignore[union-attr]
        .group_by(Path.decision)
    ).all()
    decisions = {str(d): int(n) for d, n in decided}
    return JobPaths(job.id, sample.id, sample.status, base, spec, inputs, fixed, decisions, filter_id)  # type: ignore[arg-type]


def count_survivors(results: list, cfg: FiltersConfig, rules: list[str], job_id: int, sample_id: int) -> dict:
    alive = list(results)
    questions = len({r.question_id for r in alive})
    steps = []
    for rule in rules:
        kept = [r for r in alive if r.verdicts.get(rule, {}).get("pass", True)]
        left = len({r.question_id for r in kept})
        steps.append(
            {
                "rule": rule,
                "removed": len(alive) - len(kept),
                "questions_removed": questions - left,  # questions this rule leaves without a path
                "paths_left": len(kept),
                "questions_left": left,
                "correct_left": sum(bool(r.correct) for r in kept),
                **removal_step(alive, kept),
            }
        )
        alive, questions = kept, left
    selected = [r for r in results if r.selected]
    selection = {
        "rule": "selection",
        "select": cfg.select,
        "removed": len(alive) - len(selected),
        "paths_left": len(selected),
        "questions_left": len({r.question_id for r in selected}),
        "correct_left": sum(bool(r.correct) for r in selected),
        **removal_step(alive, selected),
    }
    return {
        "job": job_id,
        "sample_job": sample_id,
        "settings": cfg.model_dump(mode="json"),
        "questions": len({r.question_id for r in results}),
        "paths": len(results),
        "correct": sum(bool(r.correct) for r in results),
        "removed": {step["rule"]: step["removed"] for step in steps},
        "rules": steps,
        "survivors": len(alive),
        "survivors_correct": sum(bool(r.correct) for r in alive),
        "selected": len(selected),
        "selected_correct": sum(bool(r.correct) for r in selected),
        "selection": selection,
    }
