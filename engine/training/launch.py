"""``sert-tui run CONFIG --stage self-train --launcher accelerate``: re-run the stage under ``accelerate launch``.

The argv is built as a list (never a shell string) and re-invokes ``python -m sert_tui --db W run CONFIG
--stage X`` in every process; inside, :mod:`engine.training.distributed` trains on every rank while rank 0
alone owns the workspace. Presets (``ddp``, ``fsdp``, ``deepspeed_zero2``, ``deepspeed_zero3``) are accelerate
config files shipped in ``engine/accelerate_presets``; ``--accelerate-config`` takes a preset name or a file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "accelerate_presets"
PRESETS = ("ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3")
DEFAULT_PRESET = "ddp"
#: Stages that train a model, the ones a launcher applies to.
TRAINING_STAGES = ("self-train", "distill", "finetune")


@dataclass(frozen=True)
class LaunchOptions:
    num_processes: int = 1
    accelerate_config: str | None = None  # preset name or file; None: the ddp preset
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None


def preset_path(name: str) -> Path:
    return PRESETS_DIR / f"{name}.yaml"


def resolve_accelerate_config(value: str | None) -> Path:
    """A preset name (``ddp``, ``fsdp``, ...) or the path of an accelerate config file."""
    if value is None:
        value = DEFAULT_PRESET
    if value in PRESETS:
        return preset_path(value)
    path = Path(value).expanduser()
    if not path.is_file():
        raise UserError(f"--accelerate-config: {value!r} is neither a preset ({', '.join(PRESETS)}) nor a file")
    return path.resolve()


def validate(stage: str, opts: LaunchOptions) -> None:
    if stage not in TRAINING_STAGES:
        raise UserError(f"--launcher accelerate runs a training stage ({', '.join(TRAINING_STAGES)}), not {stage!r}")
    if opts.num_processes < 1:
        raise UserError("--num-processes must be at least 1")
    if opts.num_machines < 1:
        raise UserError("--num-machines must be at least 1")
    if not 0 <= opts.machine_rank < opts.num_machines:
        raise UserError(f"--machine-rank must be between 0 and {opts.num_machines - 1}")
    if opts.num_processes < opts.num_machines:
        raise UserError("--num-processes counts the processes of all machines: at least one per machine")
    if opts.num_machines > 1 and (not opts.main_process_ip or not opts.main_process_port):
        raise UserError("a multi-node run needs --main-process-ip and --main-process-port (rank 0's address)")


def accelerate_argv(
    workspace: Path, config: Path, stage: str, opts: LaunchOptions, python: str | None = None
) -> list[str]:
    """The ``accelerate launch`` command line; every process runs ``python -m sert_tui --db W run CONFIG
    --stage X``. ``--num-processes`` is the total over all machines (accelerate's meaning)."""
    validate(stage, opts)
    argv = [
        python or sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(resolve_accelerate_config(opts.accelerate_config)),
        "--num_processes",
        str(opts.num_processes),
        "--num_machines",
        str(opts.num_machines),
        "--machine_rank",
        str(opts.machine_rank),
    ]
    if opts.main_process_ip:
        argv += ["--main_process_ip", opts.main_process_ip]
    if opts.main_process_port:
        argv += ["--main_process_port", str(opts.main_process_port)]
    argv += [
        "--module",
        "sert_tui",
        "--db",
        str(Path(workspace).resolve()),
        "run",
        str(Path(config).resolve()),
        "--stage",
        stage,
    ]
    return argv


def launch(workspace: Path, config: Path, stage: str, opts: LaunchOptions) -> int:
    """Run the stage under ``accelerate launch`` and return its exit status."""
    argv = accelerate_argv(workspace, config, stage, opts)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, opts.num_processes))))
    return subprocess.run(argv, env=env, check=False).returncode
