"""The embedded default runs the whole loop: `sert-tui run --default --json` headless, and `d` in the app, which
starts the same command as a job process and opens the results, zero-shot beside SERT, when it ends.

The real bundled student (headless; the app test trains a tiny one) and a real workspace file; the size is the
default config beside the workspace (``<workspace>.default.toml``, which `d` and `run --default` read and never
overwrite), scaled down here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from db.models import Dataset, Evaluation, Job
from db.session import session_scope
from db.vocabulary import DEFAULT_STAGES
from engine.pipeline.processes import DEFAULT_CONFIG, default_config_path, logs_dir
from tests.conftest import run_cli
from tests.test_app_helpers import anyio_backend, screen_text, wait_for  # noqa: F401  (anyio_backend: fixture)

pytestmark = [pytest.mark.model]

TINY_DEFAULT = """\
name = "default"
[student]
model = "{model}"
device = "cpu"
[data]
dataset = "basic_arithmetic"
train_limit = {train}
test_limit = {test}
[sampling]
first_tokens = 2
per_branch = 2
max_new_tokens = 16
[filters]  # loose, so that the few short paths keep one per question
min_tokens = 1
max_rep2 = 1.0
min_perplexity = 0.0
[train]
max_steps = 1
batch_size = 2
max_length = 96
[eval]
max_new_tokens = 6
"""


def tiny_default(db: Path, train: int, test: int, model: str = "default") -> Path:
    path = default_config_path(db)
    path.write_text(TINY_DEFAULT.format(train=train, test=test, model=model))
    return path


def run_default(db: Path) -> tuple[dict, str]:
    out, err = run_cli(db, "run", "--default", "--json")
    return json.loads(out), err


def test_run_default_runs_the_whole_loop_headless(db_path):
    config = tiny_default(db_path, train=2, test=2)
    text = config.read_text()
    doc, err = run_default(db_path)
    assert [j["kind"] for j in doc["jobs"]] == ["sample", "filter", "self-train", "eval", "eval"]
    assert all(j["status"] == "completed" for j in doc["jobs"]), doc
    assert config.read_text() == text  # the person's default config is read, never overwritten
    assert "generated dataset 'basic_arithmetic'" in err and "default: step 5 of 5: eval (zero-shot)" in err
    assert err.count("ETA") >= 4  # every job reports its progress with an ETA

    [sert] = doc["rounds"]
    assert (sert["round"], sert["label"], sert["start_model"]) == (1, "SERT", "default")
    assert sert["accuracy"]["label"] == "SERT" and sert["accuracy"]["n"] == 2
    zero = doc["zero_shot"]["accuracy"]
    assert zero["label"] == "zero-shot" and zero["n"] == 2 and zero["acc_ci"][0] <= zero["acc"] <= zero["acc_ci"][1]
    # it ends in plain words: what was trained, the paired difference on the same questions, what next
    trained, scored, means, nxt = doc["outcome"]
    assert trained.startswith("What was trained") and "on the same 2 test questions" in scored
    assert means.startswith("What it means") and nxt.startswith("Where to go next")

    from db.session import open_workspace

    engine = open_workspace(db_path)
    try:
        with session_scope(engine) as s:
            [dataset] = s.exec(select(Dataset)).all()
            jobs = {j.kind: j for j in s.exec(select(Job).where(Job.kind != "eval")).all()}
            labels = sorted(e.label for e in s.exec(select(Evaluation)).all())
        assert dataset.name == "basic_arithmetic" and dataset.task == "basic_arithmetic"
        assert jobs["sample"].config["student"]["model"] == "default"
        assert jobs["sample"].config["data"]["train_limit"] == 2  # the config beside the workspace sized it
        assert jobs["self-train"].parent_id == jobs["filter"].id and jobs["self-train"].label == "SERT"
        assert labels == ["SERT", "zero-shot"]
    finally:
        engine.dispose()

    again, err = run_default(db_path)  # done: every job skipped, the same document
    assert again == doc and err.count("already completed with this config (skipped)") == 5


def test_the_default_config_is_the_paper_s_loop_at_a_cpu_size(db_path):
    """What `d` writes on a fresh workspace: the bundled student, the paper's sampling, and the paper's filters
    but for the selection study's lever: the fitted perplexity threshold and require_correct."""
    from engine.config import load_config
    from engine.pipeline.processes import ensure_default_config

    config = load_config(ensure_default_config(db_path))
    assert config.student.model == "default" and config.data.dataset == DEFAULT_CONFIG["data"]["dataset"]
    paper = type(config.filters)().model_dump()
    assert config.filters.model_dump() == {**paper, "min_perplexity": 2.2, "require_correct": True}
    assert config.filters.select == "rep2"
    assert (config.sampling.first_tokens, config.sampling.per_branch) == (5, 5)
    assert config.eval.baselines  # zero-shot beside SERT


@pytest.mark.anyio
async def test_d_runs_the_loop_and_opens_the_results(db_path, tmp_path):
    """The app's side of the loop: the job process, its progress and the results screen. The headless test
    above runs the real student through the same command; this one trains a tiny student with its tokenizer
    (tests/conftest.py), named in the config beside the workspace, which `d` reads."""
    from sert_tui.app import SertApp
    from sert_tui.screens.home import HomeScreen
    from sert_tui.screens.results import ResultsScreen
    from tests.conftest import save_tiny_student

    student = save_tiny_student(tmp_path / "student")
    tiny_default(db_path, train=2, test=1, model=str(student))  # two questions: a path is kept whatever happens
    app = SertApp(db_path)
    async with app.run_test(size=(180, 50)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, HomeScreen) and app.screen.loaded, what="home")
        assert "A fresh workspace. Press d" in screen_text(app)
        await pilot.press("d")
        [launch] = app.launcher.launches
        assert launch.stages == DEFAULT_STAGES and launch.default and launch.log.parent == logs_dir(db_path)
        assert launch.process.args[-2:] == ["run", "--default"]  # the same command as headless
        await wait_for(pilot, lambda: isinstance(app.screen, ResultsScreen), timeout=300, what="results")
        results = app.screen
        await wait_for(pilot, lambda: results.loaded and bool(results.rows), what="evaluations")
        assert launch.returncode == 0
        table = results.query_one("#table-two")
        labels = [str(c.label) for c in table.columns.values()]
        assert labels == ["student", "dataset / split", "SERT", "zero-shot", "majority"]
        [row] = [table.get_row_at(i) for i in range(table.row_count)]
        assert all("[" in str(cell) and "n=1" in str(cell) for cell in row[2:4])  # accuracies with intervals
    log = launch.log_text()
    assert "default: step 5 of 5" in log and "ETA" in log and "default: done in" in log
