"""The user keymap: the config file's [keymap] table remaps bindings by id; bad entries are named, not fatal."""

from __future__ import annotations

from pathlib import Path

import pytest

from sert_tui.app import SertApp
from sert_tui.keymap import key_problem, load_keymap, parse_keymap
from sert_tui.screens.help import HelpScreen
from sert_tui.screens.home import HomeScreen
from sert_tui.screens.monitor import MonitorScreen
from sert_tui.screens.paths import PathsScreen
from tests.test_app_helpers import (  # noqa: F401  (anyio_backend is a fixture)
    anyio_backend,
    decisions,
    make_dataset,
    make_sample_job,
    screen_text,
    wait_for,
)

SIZE = (180, 50)

CONFIG = """
[keymap]
"paths.accept" = "z"          # a plain letter
"app.help" = "f1"             # a named key
"paths.nope" = "y"            # no binding has this id
"home.results" = "cmd+r"      # not a modifier Textual knows
"home.mark" = 3               # not a string

[keymap.monitor]              # nested tables read as dotted ids
overlay_all = "O"
"""


def test_key_names_are_checked():
    assert key_problem("a") is None and key_problem("ctrl+x") is None and key_problem("question_mark") is None
    assert key_problem("shift+tab") is None and key_problem("f5") is None and key_problem("?") is None
    assert "is not a key name" in (key_problem("foo") or "")
    assert "'cmd' is not a modifier" in (key_problem("cmd+a") or "")
    assert key_problem("") == "an empty key"


def test_keymap_file_is_parsed_and_problems_name_the_entry(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    keymap = load_keymap(config)
    assert keymap.bindings == {
        "paths.accept": "z",
        "app.help": "f1",
        "paths.nope": "y",  # the app, which knows the bindings, reports this one
        "monitor.overlay_all": "O",
    }
    assert len(keymap.problems) == 2
    assert any("'home.results'" in p and "'cmd' is not a modifier" in p for p in keymap.problems)
    assert any("'home.mark'" in p and "must be a string" in p for p in keymap.problems)
    assert all(str(config) in p for p in keymap.problems)
    assert load_keymap(tmp_path / "absent.toml").bindings == {}
    config.write_text("[keymap\n")
    broken = load_keymap(config)
    assert broken.bindings == {} and "not valid TOML" in broken.problems[0] and str(config) in broken.problems[0]
    assert parse_keymap(["a"]).problems == ['keymap: [keymap] must be a table of binding id = "keys"']


@pytest.mark.anyio
async def test_a_keymap_remaps_keys_and_help_shows_them(engine, db_path, tmp_path):
    dataset = make_dataset(engine)
    job = make_sample_job(engine, dataset, n_questions=1)
    config = tmp_path / "config.toml"
    config.write_text(CONFIG)
    app = SertApp(db_path, engine=engine, config=config)
    notes: list[str] = []
    notify = app.notify

    def record(message, **kwargs):
        notes.append(str(message))
        return notify(message, **kwargs)

    app.notify = record  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        await wait_for(pilot, lambda: len(notes) >= 3, what="the keymap's problems")
        assert any("'paths.nope'" in n and "no binding has this id" in n for n in notes), notes
        assert any("'home.results'" in n and "cmd" in n for n in notes), notes
        assert any("'home.mark'" in n for n in notes), notes
        assert "paths.nope" not in app.keymap

        await pilot.press("enter")  # open the sample job
        await wait_for(pilot, lambda: isinstance(app.screen, PathsScreen) and app.screen.loads >= 1)
        screen = app.screen
        first = screen.rows[0].id
        await pilot.press("a")  # no longer Accept
        await pilot.press("z")  # Accept now
        app.decision_writer.flush()
        await wait_for(pilot, lambda: decisions(engine, job)[first] == "accepted", what="z accepts")
        assert sum(d is not None for d in decisions(engine, job).values()) == 1

        await pilot.press("question_mark")  # no longer Help
        await pilot.pause(0.2)
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("f1")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        lines = screen_text(app).splitlines()

        def line_of(binding_id: str) -> list[str]:
            return next(line for line in lines if binding_id in line.split()).split()

        assert line_of("paths.accept")[0] == "z"
        assert line_of("app.help")[0] == "f1"
        assert line_of("monitor.overlay_all")[0] == "O"
        assert line_of("paths.reject")[0] == "x"  # not remapped: its own key
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, PathsScreen))


@pytest.mark.anyio
async def test_a_key_moved_onto_another_bindings_key_is_reported(engine, db_path):
    from tests.test_app_monitor import training_run

    dataset = make_dataset(engine)
    ctx = training_run(engine, dataset, "self-train", 2)
    ctx.finish("completed")
    app = SertApp(db_path, engine=engine, keymap={"monitor.overlay_all": "y"})  # y is the log-scale key
    notes: list[str] = []
    notify = app.notify
    app.notify = lambda message, **kw: notes.append(str(message)) or notify(message, **kw)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded)
        clash = "keymap: 'monitor.overlay_all' = 'y' takes 'y' from 'monitor.log_scale' (Log-scale loss)"
        await wait_for(pilot, lambda: any(n.startswith(clash) for n in notes), what="the clash, named at start")
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, MonitorScreen) and app.screen.polls >= 1)
        monitor = app.screen
        await pilot.press("y")
        await pilot.pause(0.2)
        assert not monitor.log_scale and monitor._generation == 1  # y overlays the runs now
