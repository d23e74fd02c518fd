"""Training monitor: live loss and learning-rate curves of one or several runs, overlaid, from the metrics table.

A poll each second reads only the metric rows newer than the last one seen, the jobs' progress (step/epoch,
ETA), the newest log lines and the memory of job processes running on this machine.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from db.app_queries import JobInfo
from db.errors import first_line
from db.vocabulary import METRIC_EPOCH, METRIC_LOSS, METRIC_LR, METRIC_MEMORY_MB, METRIC_TOKENS_PER_S
from sert_tui.context import workspace_app

POLL_SECONDS = 1.0
#: The metric names the training loop writes (db.vocabulary): the two charts and the stats line read these.
LOSS_NAMES = (METRIC_LOSS,)
LR_NAMES = (METRIC_LR,)
TOKENS_NAMES = (METRIC_TOKENS_PER_S,)
MEMORY_MB_NAMES = (METRIC_MEMORY_MB,)  # peak CUDA memory, on a GPU


def rss_gb(pid: int | None) -> float | None:
    """Resident memory of a process on this machine (Linux /proc), in GB."""
    if not pid:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) < 1e-3 or abs(value) >= 1e5:
        return f"{value:.2e}"
    return f"{value:.4g}"


class MonitorScreen(Screen):
    """Loss and learning-rate curves of the given training jobs, overlaid; stats and log of each."""

    HELP_TITLE = "Training monitor"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the previous screen", id="monitor.back"),
        Binding(
            "o",
            "overlay_all",
            "Overlay all runs",
            tooltip="overlay every training run of the workspace (again: back to the chosen runs)",
            id="monitor.overlay_all",
        ),
        Binding(
            "y",
            "toggle_log_scale",
            "Log-scale loss",
            show=False,
            tooltip="loss axis: linear / log",
            id="monitor.log_scale",
        ),
    ]

    class Polled(Message):
        def __init__(self, generation, metrics, infos, events, memory) -> None:
            super().__init__()
            self.generation = generation
            self.metrics, self.infos, self.events, self.memory = metrics, infos, events, memory

    def __init__(self, job_ids: list[int]) -> None:
        super().__init__()
        self.job_ids = list(dict.fromkeys(job_ids))
        self.chosen = list(self.job_ids)
        self.series: dict[int, dict[str, dict[int, float]]] = {}
        self.last_metric_id = 0
        self.infos: dict[int, JobInfo] = {}
        self.events: list[tuple] = []
        self.memory: dict[int, float] = {}
        self.log_scale = False
        self.plotted: dict[str, list[tuple[str, list[int], list[float]]]] = {"loss": [], "lr": []}
        self._polling = False
        self._generation = 0
        self.polls = 0

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="monitor-stats", markup=False)
        with Horizontal(id="monitor-plots"):
            yield PlotextPlot(id="loss-plot")
            yield PlotextPlot(id="lr-plot")
        with VerticalScroll(id="monitor-log"):
            yield Static("", id="monitor-log-body", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Training monitor · " + ", ".join(f"job {j}" for j in self.job_ids)
        self.poll()
        self.set_interval(POLL_SECONDS, self.poll)

    def poll(self) -> None:
        if self._polling:
            return
        self._polling = True
        self._read(self._generation, list(self.job_ids), self.last_metric_id)

    @work(thread=True, exit_on_error=False, group="monitor-read")
    def _read(self, generation: int, job_ids: list[int], after: int) -> None:
        from db import app_queries as q

        try:
            with workspace_app(self).db.connect() as conn:
                metrics = q.metric_rows(conn, job_ids, after)
                infos = {j: info for j in job_ids if (info := q.job_info(conn, j)) is not None}
                events = q.job_events(conn, job_ids[0], 40) if job_ids else []
            import socket

            host = socket.gethostname()
            memory = {
                j: m
                for j, info in infos.items()
                if info.status == "running" and info.host in ("", host) and (m := rss_gb(info.pid)) is not None
            }
            self.post_message(self.Polled(generation, metrics, infos, events, memory))
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"could not read metrics: {exc}", severity="error")
            self._polling = False

    def on_monitor_screen_polled(self, message: Polled) -> None:
        self._polling = False
        if message.generation != self._generation:
            self.poll()  # the runs changed while this read was out
            return
        self.polls += 1
        for mid, job_id, step, name, value in message.metrics:
            self.series.setdefault(job_id, {}).setdefault(name, {})[step] = value
            self.last_metric_id = max(self.last_metric_id, mid)
        self.infos = message.infos
        self.events = message.events
        self.memory = message.memory
        if message.metrics or self.polls == 1:
            self._draw()
        self.query_one("#monitor-stats", Static).update(self.stats_text())
        self.query_one("#monitor-log-body", Static).update(self.log_text())

    # -- drawing -------------------------------------------------------------------------------------
    def _curve(self, job_id: int, names: tuple[str, ...]) -> tuple[list[int], list[float]]:
        metrics = self.series.get(job_id, {})
        for name in names:
            if name in metrics:
                points = sorted(metrics[name].items())
                return [p[0] for p in points], [p[1] for p in points]
        return [], []

    def _label(self, job_id: int) -> str:
        info = self.infos.get(job_id)
        return f"{job_id} {info.kind}" if info else f"job {job_id}"

    def _draw(self) -> None:
        for plot_id, names, title in (("loss-plot", LOSS_NAMES, "loss"), ("lr-plot", LR_NAMES, "learning rate")):
            widget = self.query_one(f"#{plot_id}", PlotextPlot)
            plt = widget.plt
            plt.clear_data()
            plt.clear_figure()
            plt.title(title + (" (log)" if self.log_scale and plot_id == "loss-plot" else ""))
            plt.xlabel("step")
            key = "loss" if plot_id == "loss-plot" else "lr"
            self.plotted[key] = []
            for job_id in self.job_ids:
                xs, ys = self._curve(job_id, names)
                if not xs:
                    continue
                label = self._label(job_id)
                self.plotted[key].append((label, xs, ys))
                if len(xs) == 1:
                    plt.scatter(xs, ys, label=label)
                else:
                    plt.plot(xs, ys, label=label)
            if plot_id == "loss-plot":
                plt.yscale("log" if self.log_scale else "linear")
            widget.refresh()

    def stats_text(self) -> Text:
        t = Text()
        for job_id in self.job_ids:
            info = self.infos.get(job_id)
            metrics = self.series.get(job_id, {})
            t.append(f"job {job_id}", style="bold")
            if info is None:
                t.append(" (not in the workspace)\n", style="dim")
                continue
            t.append(f" {info.kind}")
            if info.label:
                t.append(f" {info.label!r}")
            t.append(f" · {info.status}", style="bold cyan" if info.status == "running" else "")
            steps = [max(v) for v in metrics.values() if v]
            if steps:
                t.append(f" · step {max(steps)}")
            if info.progress:
                t.append(f" · {info.progress}")
            for names, label in (((METRIC_EPOCH,), "epoch"), (TOKENS_NAMES, "tokens/s")):
                xs, ys = self._curve(job_id, names)
                if ys:
                    t.append(f" · {label} {_fmt(ys[-1])}")
            xs, ys = self._curve(job_id, MEMORY_MB_NAMES)
            if ys:
                t.append(f" · GPU memory {ys[-1] / 1024:.2f} GB")
            if job_id in self.memory:
                t.append(f" · RSS {self.memory[job_id]:.2f} GB")
            eta = _eta(info.message)
            if eta:
                t.append(f" · ETA {eta}")
            latest = [
                f"{name} {_fmt(points[max(points)])}"
                for name, points in sorted(metrics.items())
                if points and name != "epoch"
            ]
            if latest:
                t.append("\n  " + " · ".join(latest), style="dim")
            if info.error:
                t.append("\n  error: " + first_line(info.error), style="bold red")
            t.append("\n")
        return t

    def log_text(self) -> Text:
        t = Text()
        if not self.job_ids:
            return t
        t.append(f"log of job {self.job_ids[0]}\n", style="bold")
        if not self.events:
            t.append("(no log lines yet)", style="dim")
        for _id, time, level, message in self.events[-40:]:
            style = {"error": "bold red", "warning": "yellow"}.get(level, "")
            t.append(f"{time.strftime('%H:%M:%S') if time else ''} {message}\n", style=style)
        return t

    # -- actions -------------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def action_toggle_log_scale(self) -> None:
        self.log_scale = not self.log_scale
        self._draw()

    def action_overlay_all(self) -> None:
        from db import app_queries as q

        if self.job_ids != self.chosen:
            self.job_ids = list(self.chosen)
        else:
            with workspace_app(self).db.connect() as conn:
                runs = [j.id for j in q.list_job_infos(conn) if j.kind in q.TRAINING_KINDS]
            self.job_ids = list(dict.fromkeys([*self.chosen, *sorted(runs)]))
        self._generation += 1
        self.last_metric_id = 0
        self.series = {}
        self.polls = 0
        self.title = "Training monitor · " + ", ".join(f"job {j}" for j in self.job_ids)
        self.poll()


def _eta(message: str) -> str:
    """The ETA of the job's last progress line (``..., ETA 3m05s``)."""
    if "ETA " not in (message or ""):
        return ""
    return message.split("ETA ", 1)[1].split(",", 1)[0].strip()
