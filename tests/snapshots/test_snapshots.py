"""Snapshot tests of every screen and modal of the app (pytest-textual-snapshot; the SVGs are in __snapshots__/).

The workspace and the screens the README's pictures show come from tests/fixture_workspace.py, which
``make screenshots`` (scripts/screenshots.py) drives too: rows only (no model), every time fixed, relative
paths, a fixed terminal size, no animations or blinking cursors, so that a snapshot depends on the app alone.

Update after an intended change of the layout: ``pytest tests/snapshots --snapshot-update``, then look at the
SVGs (the report pytest writes on a failure shows old and new side by side).
"""

from __future__ import annotations

import os
import time

import pytest

from sert_tui.screens.modals import ConfigFileScreen, ConfirmScreen, NewJobScreen, QuitScreen, TextScreen
from sert_tui.screens.paths import PathsScreen
from sert_tui.screens.results import PredictionsScreen, ResultsScreen
from tests.fixture_workspace import (
    SIZE,
    build_workspace,
    fixed_display,
    home,
    make_app,
    show_explorer,
    show_monitor,
    show_paths,
    show_results,
    show_review,
    steady,
)
from tests.test_app_helpers import wait_for


@pytest.fixture
def utc():
    """Local time is UTC while a snapshot is taken (should a time ever be shown in local time)."""
    before = os.environ.get("TZ")
    yield
    if before is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.fixture
def workspace(engine, tmp_path, monkeypatch, utc) -> dict[str, int]:
    """The fixture workspace (tests/fixture_workspace.py); the test runs in its folder."""
    fixed_display(monkeypatch, tmp_path)
    return build_workspace(engine)


# -- screens -------------------------------------------------------------------------------------------------
def test_home_with_jobs(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await home(pilot)
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_paths_with_verdicts_and_decisions(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await show_paths(pilot, workspace)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_filter_report_paths_the_filter_removed(snap_compare, engine, workspace):
    """The filter job's view: its sample job's paths, only those that failed a rule (v twice), with the rule."""

    async def run_before(pilot) -> None:
        screen = await home(pilot)
        screen.select_job(workspace["filter"])
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, PathsScreen) and pilot.app.screen.loads >= 1)
        paths = pilot.app.screen
        await pilot.press("v", "v")
        await wait_for(pilot, lambda: paths.loads >= 3 and paths.flt.passed is False, what="the failed paths")
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_filter_explorer(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await show_explorer(pilot, workspace)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_review_one_question_at_a_time(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await show_review(pilot, workspace)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_monitor_two_runs_overlaid(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await show_monitor(pilot, workspace)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_results(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await show_results(pilot, workspace)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_predictions_side_by_side(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await home(pilot)
        await pilot.press("R")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ResultsScreen) and pilot.app.screen.loaded)
        await pilot.press("m", "down", "p")  # A: the first evaluation; B: the second
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, PredictionsScreen) and pilot.app.screen.loaded)
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await home(pilot)
        await pilot.press("question_mark")
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


# -- modals --------------------------------------------------------------------------------------------------
def test_new_job_form(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await home(pilot)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, NewJobScreen), what="the form")
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_job_from_a_config_file(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        await home(pilot)
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfigFileScreen), what="the form")
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_confirm_cancel_of_a_job(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        screen = await home(pilot)
        screen.select_job(workspace["pending"])
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, ConfirmScreen), what="the question")
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_quit_dialog(snap_compare, engine, workspace):
    """The choices when job processes this app started still run (shown here with two made-up processes)."""

    async def run_before(pilot) -> None:
        await home(pilot)
        await pilot.app.push_screen(
            QuitScreen(["pid 4242: sample+filter (default.toml)", "pid 4343: self-train (experiment.toml)"])
        )
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)


def test_error_of_a_failed_job(snap_compare, engine, workspace):
    async def run_before(pilot) -> None:
        screen = await home(pilot)
        screen.select_job(workspace["failed"])
        await pilot.press("e")
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, TextScreen), what="the error")
        await steady(pilot)

    assert snap_compare(make_app(engine), terminal_size=SIZE, run_before=run_before)
