"""Metrics where people already look: TensorBoard event files and trackio, besides the workspace's own rows.

``[log] report_to`` names the places (none by default). A training job sends every step's metric rows (the
same names, steps and values the workspace's ``metrics`` table gets, through :meth:`JobContext.metrics`), an
evaluation job its Acc/Fmt/Len/Rep once. TensorBoard runs go to ``<workspace dir>/tb/<job id>-<label>/``, so
that ``tensorboard --logdir <workspace dir>/tb`` shows every run of the workspace side by side; trackio runs
go to the project ``sert-tui-<workspace file stem>``, named ``<job id>-<label>``.

Logging is not part of what a job learns: ``log`` is in no fingerprint, and a job resumed with another
``report_to`` continues where it was. The writers are imported only when asked for.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from db.errors import UserError
from engine.files import FILE_MODE, private_dir, workspace_dir

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from engine.config import ExperimentConfig

#: The folder under the workspace's folder that holds one TensorBoard run per job.
TB_DIR = "tb"


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...

    def close(self) -> None: ...


def run_name(job_id: int, label: str) -> str:
    """``<job id>-<label>``, the label reduced to characters every file system and dashboard takes."""
    safe = re.sub(r"[^A-Za-z0-9+._-]+", "_", label).strip("_") or "job"
    return f"{job_id}-{safe}"


def tensorboard_dir(database: Engine, job_id: int, label: str) -> Path:
    return workspace_dir(database) / TB_DIR / run_name(job_id, label)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_report_to(config: ExperimentConfig) -> None:
    """One clear error, before any job starts, when ``log.report_to`` asks for a writer that is not installed."""
    wanted = config.log.report_to
    if "tensorboard" in wanted and not (_installed("tensorboardX") or _installed("tensorboard")):
        raise UserError(
            'log.report_to: "tensorboard" needs tensorboardX (pip install tensorboardX), '
            'or remove "tensorboard" from log.report_to'
        )
    if "trackio" in wanted and not _installed("trackio"):
        raise UserError(
            "log.report_to: \"trackio\" is not installed: pip install 'sert-tui[trackio]' (or trackio), "
            'or remove "trackio" from log.report_to'
        )


class TensorBoardTracker:
    """Scalars of one job in one TensorBoard run folder (files owner-only, as everything in the workspace)."""

    def __init__(self, folder: Path):
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # torch's writer, where the tensorboard package is there instead
            from torch.utils.tensorboard import SummaryWriter  # type: ignore[no-redef]
        self.folder = private_dir(folder)
        self.writer = SummaryWriter(str(self.folder), flush_secs=10)
        self._protect()

    def _protect(self) -> None:
        for entry in self.folder.iterdir():
            if entry.is_file():
                os.chmod(entry, FILE_MODE)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, float(value), step)

    def close(self) -> None:
        self.writer.flush()
        self.writer.close()
        self._protect()


class TrackioTracker:
    def __init__(self, project: str, name: str, config: dict[str, Any]):
        import trackio

        self.run = trackio.init(project=project, name=name, config=config, resume="allow")

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackers:
    """Every tracker ``report_to`` names, as one (no tracker: does nothing)."""

    def __init__(self, trackers: list[Tracker]):
        self.trackers = trackers

    def log(self, step: int, values: dict[str, float]) -> None:
        for tracker in self.trackers:
            tracker.log(step, values)

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []


def open_trackers(database: Engine, config: ExperimentConfig, job_id: int, label: str) -> Trackers:
    """The trackers of ``config.log.report_to`` for one job."""
    check_report_to(config)
    trackers: list[Tracker] = []
    for where in dict.fromkeys(config.log.report_to):
        if where == "tensorboard":
            trackers.append(TensorBoardTracker(tensorboard_dir(database, job_id, label)))
        elif where == "trackio":
            project = f"sert-tui-{Path(str(database.url.database)).stem}"
            trackers.append(TrackioTracker(project, run_name(job_id, label), config.model_dump(mode="json")))
    return Trackers(trackers)
