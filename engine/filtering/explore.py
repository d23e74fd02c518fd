"""What-if filtering: the counts a set of thresholds would give on a sample job's stored paths, writing nothing.

Behind the filter explorer screen and ``sert-tui report filters --job N --set filters.min_perplexity=3``. The
rules are pure functions of each path's stored text and numbers, so the same judge as the filter stage runs
again on the stored rows with other settings. Per rule, in the order applied: the paths it removes (that
survived the rules before it), and the paths and questions left after it, with how many of those paths are
correct; then the selection (one path per question) and how many selected paths are correct.
"""

from __future__ import annotations

import tomllib
from typing import Any

from db.errors import UserError
from db.models import Dataset, Job
from db.vocabulary import FILTER, SAMPLE
from engine.config import FiltersConfig

#: ``--set`` keys start with this section.
SECTION = "filters."


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["filters.min_perplexity=3", ...]`` as ``{"min_perplexity": 3}``; values are TOML literals (a bare word
    is a string)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.startswith(SECTION) or len(key) == len(SECTION):
            raise UserError(f"--set {item!r}: expected filters.KEY=VALUE (e.g. filters.min_perplexity=3)")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key[len(SECTION) :]] = value
    return out


def settings_of(job: Job, overrides: dict[str, Any]) -> FiltersConfig:
    """The job's own filter settings (a filter job's frozen ones, a sample job's config) with ``overrides``."""
    base = dict((job.config or {}).get("filters") or {})
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


def what_if(session: Any, job_id: int, overrides: dict[str, Any]) -> dict[str, Any]:
    """The counts of the module docstring for the sample job of ``job_id`` under its settings + ``overrides``."""
    from engine.filtering.rules import judge_job, rules_in_order
    from engine.sampling.stage import answer_spec

    job = session.get(Job, job_id)
    if job is None:
        raise UserError(f"no job with id {job_id}")
    if job.kind not in (SAMPLE, FILTER):
        raise UserError(f"job {job_id} is a {job.kind!r} job; report filters needs a filter or sample job")
    sample = session.get(Job, job.parent_id) if job.kind == FILTER else job
    if sample is None:
        raise UserError(f"filter job {job_id}: its sample job is gone")
    cfg = settings_of(job, overrides)
    results, _counts = judge_job(session, sample.id, cfg, answer_spec(session.get(Dataset, sample.dataset_id)))
    return count_survivors(results, cfg, rules_in_order(cfg), job_id, sample.id)


def count_survivors(results: list, cfg: FiltersConfig, rules: list[str], job_id: int, sample_id: int) -> dict:
    alive = list(results)
    steps = []
    for rule in rules:
        kept = [r for r in alive if r.verdicts.get(rule, {}).get("pass", True)]
        steps.append(
            {
                "rule": rule,
                "removed": len(alive) - len(kept),
                "paths_left": len(kept),
                "questions_left": len({r.question_id for r in kept}),
                "correct_left": sum(bool(r.correct) for r in kept),
            }
        )
        alive = kept
    selected = [r for r in results if r.selected]
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
    }
