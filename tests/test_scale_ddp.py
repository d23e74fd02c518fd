"""Training through ``accelerate launch``: the argv, the presets, and a real 2-process gloo DDP run.

The DDP run trains a tiny student (the bundled student's tokenizer, tests/conftest.py) for 3 steps with
``--launcher accelerate --num-processes 2`` and checks that its loss curve matches a single-process run with the
same global batch, and that only rank 0 wrote to the workspace (one job, one metric row per step, one checkpoint).
The check is about how the processes split and reduce the batch, not about the model, so a tiny one does.
"""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest

from db.errors import UserError
from engine.training.accelerate_launch import PRESETS, LaunchOptions, accelerate_argv, resolve_accelerate_config
from sert_tui.cli import main
from tests.conftest import rt_files

CONFIG = """\
name = "ddp"
[student]
device = "cpu"
model = "{student}"
[data]
dataset = "sqa"
split = "train"
train_limit = 12
[train]
batch_size = 4
max_steps = 3
max_length = 48
bf16 = "off"
lr = 1e-2
save_steps = 100
"""


def test_argv_is_a_list_that_reinvokes_the_stage(tmp_path: Path) -> None:
    argv = accelerate_argv(tmp_path / "w.db", tmp_path / "c.toml", "self-train", LaunchOptions(num_processes=8))
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert argv[argv.index("--config_file") + 1].endswith("accelerate_presets/ddp.yaml")
    assert argv[argv.index("--num_processes") + 1] == "8"
    tail = argv[argv.index("--module") :]
    assert tail == ["--module", "sert_tui", "--db", str(tmp_path / "w.db"), "run", str(tmp_path / "c.toml")] + [
        "--stage",
        "self-train",
    ]
    assert "--main_process_ip" not in argv


def test_multi_node_flags_pass_through(tmp_path: Path) -> None:
    opts = LaunchOptions(16, "deepspeed_zero3", 2, 1, "10.0.0.1", 29500)
    argv = accelerate_argv(tmp_path / "w.db", tmp_path / "c.toml", "distill", opts)
    pairs = dict(zip(argv[3:15:2], argv[4:16:2], strict=True))
    assert pairs["--num_machines"] == "2" and pairs["--machine_rank"] == "1"
    assert pairs["--main_process_ip"] == "10.0.0.1" and pairs["--main_process_port"] == "29500"
    assert pairs["--config_file"].endswith("deepspeed_zero3.yaml")


@pytest.mark.parametrize(
    ("stage", "opts", "message"),
    [
        ("sample", LaunchOptions(2), "training stage"),
        ("self-train", LaunchOptions(2, num_machines=2), "main-process-ip"),
        (
            "self-train",
            LaunchOptions(4, num_machines=2, machine_rank=2, main_process_ip="h", main_process_port=1),
            "rank",
        ),
        ("self-train", LaunchOptions(2, accelerate_config="no-such-preset"), "neither a preset"),
    ],
)
def test_bad_launches_are_refused(tmp_path: Path, stage: str, opts: LaunchOptions, message: str) -> None:
    with pytest.raises(UserError, match=message):
        accelerate_argv(tmp_path / "w.db", tmp_path / "c.toml", stage, opts)


def test_presets_are_accelerate_configs() -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {}
    for name in PRESETS:
        loaded = load_config_from_file(str(resolve_accelerate_config(name)))  # what `accelerate launch` reads
        kinds[name] = loaded.distributed_type.value
        assert loaded.mixed_precision in ("no", "bf16")
    assert kinds == {
        "ddp": "MULTI_GPU",
        "fsdp": "FSDP",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
    }


def _workspace(path: Path) -> None:
    dataset, split = rt_files("strategy_qa")
    argv = ["--db", str(path), "data", "import", "reasoning-teacher", "--name", "sqa"]
    assert main([*argv, "--dataset", str(dataset), "--split", str(split), "--json"]) == 0


def _curve(path: Path) -> dict[str, list[float]]:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT name, step, value FROM metrics ORDER BY name, step").fetchall()
    finally:
        con.close()
    curve: dict[str, list[float]] = {}
    for name, _step, value in rows:
        curve.setdefault(name, []).append(value)
    return curve


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process(tmp_path: Path, capsys) -> None:
    config = tmp_path / "ddp.toml"
    from tests.conftest import save_tiny_student

    student = save_tiny_student(tmp_path / "student")
    config.write_text(CONFIG.format(student=student), encoding="utf-8")
    one, two = tmp_path / "one" / "w.db", tmp_path / "two" / "w.db"
    for ws in (one, two):
        ws.parent.mkdir()
        _workspace(ws)
    assert main(["--db", str(one), "run", str(config), "--stage", "finetune"]) == 0
    launch = ["--launcher", "accelerate", "--num-processes", "2", "--main-process-port", str(_free_port())]
    assert main(["--db", str(two), "run", str(config), "--stage", "finetune", *launch]) == 0
    capsys.readouterr()

    single, ddp = _curve(one), _curve(two)
    assert len(single["loss"]) == len(ddp["loss"]) == 3
    assert ddp["processes"] == [2.0, 2.0, 2.0] and "processes" not in single
    for a, b in zip(single["loss"], ddp["loss"], strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    for a, b in zip(single["grad_norm"], ddp["grad_norm"], strict=True):
        assert b == pytest.approx(a, rel=1e-3)
    assert single["loss"][2] < single["loss"][0]  # it trained

    con = sqlite3.connect(two)
    try:  # rank 1 wrote nothing: one job, one row per step and metric, one (final) checkpoint
        assert con.execute("SELECT COUNT(*), MIN(status), MIN(kind) FROM jobs").fetchone() == (
            1,
            "completed",
            "finetune",
        )
        assert con.execute("SELECT COUNT(*) FROM metrics WHERE name = 'loss'").fetchone()[0] == 3
        assert con.execute("SELECT COUNT(*), MIN(is_final) FROM checkpoints").fetchone() == (1, 1)
    finally:
        con.close()
    assert (tmp_path / "two" / "checkpoints" / "job-1" / "step-3" / "model.safetensors").is_file()
