"""The filter explorer: histograms of a sample job's paths with the thresholds, keys that move them, counts that
are what ``what_if`` gives, and the apply key that runs a real filter job and keeps every human decision.

The real app on a real workspace file whose paths were written by the repository functions the engine uses.
"""

from __future__ import annotations

import pytest
from sqlmodel import select

from db.errors import UserError
from db.models import Dataset, Job
from db.models import Path as PathRow
from db.paths_repo import set_decision
from db.session import session_scope
from engine.filtering.explore import THRESHOLDS, thresholds, what_if
from sert_tui.app import SertApp
from sert_tui.screens.explorer import FilterExplorerScreen
from sert_tui.screens.modals import ConfirmScreen
from sert_tui.screens.paths import PathsScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    decisions,
    make_dataset,
    make_sample_job,
    screen_text,
    wait_for,
)

pytestmark = pytest.mark.anyio
SIZE = (160, 50)


@pytest.fixture
def workspace(engine, db_path):
    """Three questions of 25 paths, not filtered yet, and four human decisions on them."""
    dataset = make_dataset(engine, n_train=5)
    sample = make_sample_job(engine, dataset, n_questions=3, filtered=False)
    with session_scope(engine) as s:
        ids = sorted(s.exec(select(PathRow.id).where(PathRow.job_id == sample)).all())  # type: ignore[arg-type]
        # Path k of question 0. The rules select k = 0 (rep-2 0, perplexity 7); at min_perplexity 8 they select
        # k = 18 instead. k = 4 is 12 tokens long: only a person's accept puts it in the training set.
        for k, decision in {0: "rejected", 18: "rejected", 1: "accepted", 4: "accepted", 3: "ignored"}.items():
            set_decision(s, ids[k], decision)
    return {"engine": engine, "db": db_path, "dataset": dataset, "sample": sample}


def counts_now(engine, job_id: int, overrides: dict) -> dict:
    with session_scope(engine) as s:
        return what_if(s, job_id, overrides)


async def open_from_paths(app: SertApp, pilot, job_id: int) -> FilterExplorerScreen:
    await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
    paths = PathsScreen(job_id)
    await app.push_screen(paths)
    await wait_for(pilot, lambda: paths.loaded.is_set(), what="paths")
    await pilot.press("w")
    await wait_for(pilot, lambda: isinstance(app.screen, FilterExplorerScreen), what="the explorer")
    screen = app.screen
    assert isinstance(screen, FilterExplorerScreen)
    await wait_for(pilot, lambda: screen.loads >= 1, what="the paths read")
    return screen


def test_the_histograms_are_the_rows_of_one_table():
    """Length, rep-2 and perplexity always; confidence exactly when its setting exists."""
    from engine.config import FiltersConfig

    settings = [t.setting for t in thresholds()]
    assert settings[:3] == ["min_tokens", "max_rep2", "min_perplexity"]
    assert settings == [t.setting for t in THRESHOLDS if t.setting in FiltersConfig.model_fields]
    length = thresholds()[0]
    assert length.moved(25, 1) == 26 and isinstance(length.moved(25, 1), int)
    assert length.moved(3, -10) == 0  # min_tokens >= 0
    assert thresholds()[1].moved(0.995, 1) == 1.0  # max_rep2 <= 1


async def test_keys_move_a_threshold_and_the_counts_are_what_if(workspace):
    engine, sample = workspace["engine"], workspace["sample"]
    app = SertApp(workspace["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_from_paths(app, pilot, sample)
        assert screen.paths is not None and screen.paths.sample_id == sample
        start = counts_now(engine, sample, {})
        assert screen.counts == start
        shown = screen_text(app)
        assert "no filter job has run on it" in shown
        assert f"{start['paths']} paths of 3 questions" in shown
        assert "accepted" in shown and "rejected" in shown

        # down twice: the perplexity histogram; shift+right three times: 5.0 -> 8.0 (ten steps of 0.1 each)
        await pilot.press("down", "down")
        assert screen.rows[screen.selected].setting == "min_perplexity"
        await pilot.press("shift+right", "shift+right", "shift+right")
        assert screen.values["min_perplexity"] == 8.0
        await wait_for(pilot, lambda: screen.counted_for == screen.values, what="the recount")
        moved = counts_now(engine, sample, {"min_perplexity": 8.0})
        assert screen.counts == moved
        perplexity = next(s for s in moved["rules"] if s["rule"] == "perplexity")
        assert perplexity["removed"] > next(s for s in start["rules"] if s["rule"] == "perplexity")["removed"]
        shown = screen_text(app)
        assert f"removes {perplexity['removed']} paths" in shown
        assert "min_perplexity 5 → 8" in shown  # not applied yet
        await pilot.press("ctrl+r")  # a re-read keeps the moved threshold
        await wait_for(pilot, lambda: screen.loads >= 2 and screen.counted_for == screen.values, what="re-read")
        assert screen.values["min_perplexity"] == 8.0 and screen.counts == moved

        # left on the length row: one token less; backspace: back to the settings the paths carry
        await pilot.press("up", "up", "left")
        assert screen.values["min_tokens"] == 24
        await wait_for(pilot, lambda: screen.counted_for == screen.values, what="the recount")
        assert screen.counts == counts_now(engine, sample, {"min_perplexity": 8.0, "min_tokens": 24})
        await pilot.press("backspace")
        await wait_for(pilot, lambda: screen.counted_for == screen.values and not screen.changed(), what="reset")
        assert screen.counts == start


async def test_a_number_nobody_recorded_says_so(workspace):
    """The histogram of a number no path of the job has (as confidence on a job sampled before it existed)."""
    engine, sample = workspace["engine"], workspace["sample"]
    with session_scope(engine) as s:
        for path in s.exec(select(PathRow).where(PathRow.job_id == sample)).all():
            path.perplexity = None
    app = SertApp(workspace["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await open_from_paths(app, pilot, sample)
        assert "no perplexity recorded for this job" in screen_text(app)
        assert "no confidence recorded for this job" in screen_text(app)  # sampled without margins


async def test_the_confidence_threshold_counts_what_if(workspace):
    engine, sample = workspace["engine"], workspace["sample"]
    with session_scope(engine) as s:
        for n, path in enumerate(s.exec(select(PathRow).where(PathRow.job_id == sample).order_by(PathRow.id)).all()):
            path.confidence = round(0.01 * (n % 10), 2)  # 0.00 .. 0.09
    app = SertApp(workspace["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_from_paths(app, pilot, sample)
        assert "no confidence recorded" not in screen_text(app)
        assert "off at this threshold" in screen_text(app)  # min_confidence 0: the rule is off
        await pilot.press("down", "down", "down")
        assert screen.rows[screen.selected].setting == "min_confidence"
        await pilot.press(*["right"] * 5)
        assert screen.values["min_confidence"] == 0.05
        await wait_for(pilot, lambda: screen.counted_for == screen.values, what="the recount")
        counts = counts_now(engine, sample, {"min_confidence": 0.05})
        assert screen.counts == counts
        step = next(s for s in counts["rules"] if s["rule"] == "confidence")
        assert step["removed"] > 0 and f"removes {step['removed']} paths" in screen_text(app)


async def test_apply_runs_a_filter_job_keeps_decisions_and_training_follows_it(workspace):
    from engine.answers import answer_spec
    from engine.config import DataConfig, ExperimentConfig
    from engine.filtering.rules import judge_job
    from engine.sampling.stage import sample_fingerprint
    from engine.training.datasets import training_paths
    from engine.training.stage import sert_plan

    engine, sample = workspace["engine"], workspace["sample"]
    config = ExperimentConfig(data=DataConfig(dataset="arith"))
    with session_scope(engine) as s:  # the sample job of this config, as the sample stage would have made it
        dataset = s.get(Dataset, workspace["dataset"])
        s.get(Job, sample).fingerprint = sample_fingerprint(config, dataset)  # type: ignore[union-attr, arg-type]
    before = decisions(engine, sample)
    app = SertApp(workspace["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: getattr(app.screen, "loaded", False) is True, what="home")
        app.screen.select_job(sample)  # type: ignore[attr-defined]
        await pilot.press("w")  # from the home screen's highlighted sample job
        await wait_for(pilot, lambda: isinstance(app.screen, FilterExplorerScreen), what="the explorer")
        screen = app.screen
        assert isinstance(screen, FilterExplorerScreen)
        await wait_for(pilot, lambda: screen.loads >= 1, what="the paths read")
        await pilot.press("down", "down", "shift+right", "shift+right", "shift+right")  # min_perplexity 8
        await wait_for(pilot, lambda: screen.counted_for == screen.values, what="the recount")
        expected = screen.counts
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the question")
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.applied and screen.loads >= 2, timeout=30, what="the filter job")
        new = screen.applied[0]
        assert screen.paths is not None and screen.paths.job_id == new  # it starts from the new job's settings
        assert screen.base["min_perplexity"] == 8.0 and not screen.changed()
        assert f"thresholds of filter job {new}" in screen_text(app)

    assert decisions(engine, sample) == before  # every human decision is still there
    with session_scope(engine) as s:
        job = s.get(Job, new)
        assert job is not None and (job.kind, job.status, job.parent_id) == ("filter", "completed", sample)
        assert job.config["filters"]["min_perplexity"] == 8.0
        assert s.get(Job, sample).summary["filter_job"] == new  # type: ignore[union-attr]
        assert job.summary["selected"] == expected["selected"]
        rows = s.exec(select(PathRow.id, PathRow.selected).where(PathRow.job_id == sample)).all()
        selected = {pid for pid, sel in rows if sel}
        results, _ = judge_job(
            s, sample, config.filters.model_copy(update={"min_perplexity": 8.0}), answer_spec(dataset)
        )
        assert selected == {r.id for r in results if r.selected} and len(selected) == expected["selected"]
        # The training set follows the new filter job: selected and not rejected, plus accepted by hand.
        accepted = {pid for pid, d in before.items() if d == "accepted"}
        rejected = {pid for pid, d in before.items() if d == "rejected"}
        wanted = (selected - rejected) | accepted
        assert {p.id for p, _q in training_paths(s, sample, new)} == wanted
    # A config with the applied settings trains on the new filter job's selection; the config's own settings
    # (min_perplexity 5) have no filter job of their own here: it says to run the filter stage, never trains on
    # another filter job's selection.
    applied = config.model_copy(update={"filters": config.filters.model_copy(update={"min_perplexity": 8.0})})
    plan = sert_plan(engine, applied, dataset)  # type: ignore[arg-type]
    assert plan.parent_id == new
    assert {x.path_id for x in plan.samples} == wanted
    with pytest.raises(UserError, match="run --stage filter first"):
        sert_plan(engine, config, dataset)  # type: ignore[arg-type]


async def test_each_rule_shows_what_it_throws_away(workspace):
    """Per rule and for the selection: the correct paths removed beside the incorrect ones and the correct share
    of the removed and the kept, with the legend (a rule removing both at one rate selects nothing)."""
    engine, sample = workspace["engine"], workspace["sample"]
    app = SertApp(workspace["db"], engine=engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_from_paths(app, pilot, sample)
        await wait_for(pilot, lambda: screen.counts is not None, what="the counts")
        counts = counts_now(engine, sample, {})
        shown = screen_text(app)
        for step in [*counts["rules"], counts["selection"]]:
            if step["rule"] in ("pattern", "selection"):
                continue  # in the summary line, checked below
            line = f"removed: {step['removed_correct']} correct · {step['removed_incorrect']} incorrect"
            assert line in shown, line
        assert "correct share:" in shown and "of removed" in shown and "of kept" in shown
        sel = counts["selection"]
        assert f"selection (rep2) removed: {sel['removed_correct']} correct" in shown
        assert "selects nothing" in shown
