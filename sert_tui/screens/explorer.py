"""Filter explorer: a sample job's paths as histograms of the numbers the rules read, each with its threshold,
and the counts other thresholds would give (the paper's Fig. 4, made interactive).

The paths are read once in a worker (``engine.filtering.explore.load_job_paths``: the texts, the numbers and
what of each verdict no threshold moves); every key then recounts them in memory in a worker through the
filter stage's own rules (``JobPaths.counts``, what ``sert-tui report filters --set`` prints). ``a`` applies
the settings as a new filter job through the filter stage (``engine.filtering.stage.refilter``): a real job with
its own verdicts (``filter_verdicts``), shown on the paths from then on, the paths' human decisions untouched; a
config with these settings trains on its selection (each filter job keeps its own, so none is lost).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static
from textual_plotext import PlotextPlot

from engine.filtering.explore import SAME_RATE, Threshold, thresholds
from sert_tui.context import workspace_app

if TYPE_CHECKING:
    from engine.filtering.explore import JobPaths

BINS = 40
#: The x axis ends at this quantile of a number (or at the threshold, if higher); larger values sit at the edge.
CLIP_QUANTILE = 0.99


def fmt(t: Threshold, value: float) -> str:
    return format(value, t.fmt)


def plot_range(values: list[float], threshold: float) -> tuple[float, float, int]:
    """The x range a histogram shows and how many values lie beyond its right end (perplexity has a long tail)."""
    ordered = sorted(values)
    top = ordered[min(len(ordered) - 1, int(CLIP_QUANTILE * len(ordered)))]
    low, high = min(ordered[0], threshold), max(top, threshold)
    if high <= low:
        high = low + 1
    return low, high, sum(v > high for v in ordered)


def _pct(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.0f}%"


def removal_text(step: dict[str, Any]) -> str:
    """What a rule (or the selection) throws away: correct vs incorrect, and the correct share of each side."""
    return (
        f"removed: {step['removed_correct']:,} correct · {step['removed_incorrect']:,} incorrect\n"
        f"correct share: {_pct(step['correct_share_removed'])} of removed · {_pct(step['correct_share_kept'])} of kept"
    )


def step_text(step: dict[str, Any]) -> str:
    return (
        f"removes {step['removed']:,} paths · {step['questions_removed']:,} questions\n"
        f"left: {step['paths_left']:,} paths of {step['questions_left']:,} questions · "
        f"{step['correct_left']:,} correct\n{removal_text(step)}"
    )


class FilterExplorerScreen(Screen):
    """Histograms of a sample job's paths with the thresholds on them; keys move them, counts follow."""

    HELP_TITLE = "Filter explorer"
    BINDINGS = [
        Binding(
            "up", "select(-1)", "Prev rule", tooltip="select the histogram above (its threshold)", id="explorer.prev"
        ),
        Binding(
            "down", "select(1)", "Next rule", tooltip="select the histogram below (its threshold)", id="explorer.next"
        ),
        Binding(
            "right",
            "move(1)",
            "Threshold +",
            tooltip="raise the selected threshold one step (tokens 1, rep-2 0.01, perplexity 0.1, confidence 0.01)",
            id="explorer.up",
        ),
        Binding("left", "move(-1)", "Threshold −", tooltip="lower the selected threshold one step", id="explorer.down"),
        Binding(
            "shift+right",
            "move(10)",
            "+10 steps",
            show=False,
            tooltip="raise the selected threshold ten steps",
            id="explorer.up10",
        ),
        Binding(
            "shift+left",
            "move(-10)",
            "−10 steps",
            show=False,
            tooltip="lower the selected threshold ten steps",
            id="explorer.down10",
        ),
        Binding(
            "backspace",
            "reset",
            "Reset",
            tooltip="every threshold back to the settings the paths carry now",
            id="explorer.reset",
        ),
        Binding(
            "a",
            "apply",
            "Apply as filter job",
            tooltip="run these settings as a new filter job of the sample job (asks first); decisions are kept",
            id="explorer.apply",
        ),
        Binding("escape", "back", "Back", tooltip="back to the previous screen", id="explorer.back"),
    ]

    class Loaded(Message):
        def __init__(self, paths: JobPaths, counts: dict[str, Any]) -> None:
            super().__init__()
            self.paths, self.counts = paths, counts

    class Counted(Message):
        def __init__(self, request: int, settings: dict[str, Any], counts: dict[str, Any]) -> None:
            super().__init__()
            self.request, self.settings, self.counts = request, settings, counts

    class Applied(Message):
        def __init__(self, job_id: int, new: bool, summary: dict[str, Any]) -> None:
            super().__init__()
            self.job_id, self.new, self.summary = job_id, new, summary

    class Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.rows: list[Threshold] = thresholds()
        self.selected = 0
        self.paths: JobPaths | None = None
        self.base: dict[str, Any] = {}  # the settings the counts start from (the paths carry them now)
        self.values: dict[str, float] = {}  # the thresholds as the person set them
        self.counts: dict[str, Any] | None = None
        self.counted_for: dict[str, Any] | None = None  # the settings ``counts`` are of (tests wait on it)
        self.loads = 0
        self.applied: list[int] = []  # filter jobs this screen has run
        self._request = 0
        self._numbers: dict[str, list[float]] = {}
        self._fresh = True  # the next read starts from the settings the paths carry

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="explorer-status", markup=False)
        with Vertical(id="explorer-rows"):
            for t in self.rows:
                with Horizontal(classes="explorer-row", id=f"row-{t.setting}"):
                    yield PlotextPlot(id=f"plot-{t.setting}")
                    yield Static("", id=f"counts-{t.setting}", classes="explorer-counts", markup=False)
        yield Static("", id="explorer-summary", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"Filter explorer · job {self.job_id}"
        self._mark_selected()
        self.reload()

    # -- reading and counting (workers) --------------------------------------------------------------
    def reload(self) -> None:
        """Read the paths again (``r``; after an apply, the settings of the new filter job)."""
        self._load(self.paths.sample_id if self.paths is not None else self.job_id)

    @work(thread=True, exclusive=True, group="explorer-load", exit_on_error=False)
    def _load(self, job_id: int) -> None:
        from db.session import session_scope
        from engine.filtering.explore import load_job_paths

        try:
            with session_scope(workspace_app(self).db) as s:
                paths = load_job_paths(s, job_id, current=True)
            counts = paths.counts()
        except Exception as exc:
            self.post_message(self.Failed(f"could not read the paths of job {job_id}: {exc}"))
            return
        self.post_message(self.Loaded(paths, counts))

    @work(thread=True, group="explorer-count", exit_on_error=False)
    def _count(self, request: int, paths: JobPaths, settings: dict[str, Any]) -> None:
        try:
            counts = paths.counts(settings)
        except Exception as exc:
            self.post_message(self.Failed(f"could not count: {exc}"))
            return
        self.post_message(self.Counted(request, settings, counts))

    def on_filter_explorer_screen_loaded(self, message: Loaded) -> None:
        # A re-read (r) keeps the thresholds the person moved; after an apply they are the new job's own.
        keep = {} if self._fresh else self.changed()
        self._fresh = False
        paths = self.paths = message.paths
        self.base = paths.settings().model_dump()
        self.values = {t.setting: self.base[t.setting] for t in self.rows} | keep
        self._numbers = {t.column: [v for v in paths.values(t.column) if v is not None] for t in self.rows}
        self._request += 1  # a count still running is of the old paths
        self.counts, self.counted_for = message.counts, {t.setting: self.base[t.setting] for t in self.rows}
        self.loads += 1
        if keep:
            self._recount()
        self._draw_all()

    def on_filter_explorer_screen_counted(self, message: Counted) -> None:
        if message.request != self._request:
            return  # a newer key press has its own count coming
        self.counts, self.counted_for = message.counts, message.settings
        self._draw_counts()

    def on_filter_explorer_screen_failed(self, message: Failed) -> None:
        self.notify(message.error, severity="error", timeout=10)

    # -- drawing -------------------------------------------------------------------------------------
    def _mark_selected(self) -> None:
        for i, t in enumerate(self.rows):
            self.query_one(f"#row-{t.setting}").set_class(i == self.selected, "-selected")
        self._draw_counts()

    def _draw_all(self) -> None:
        for t in self.rows:
            self._draw_plot(t)
        self._draw_counts()

    def _draw_plot(self, t: Threshold) -> None:
        widget = self.query_one(f"#plot-{t.setting}", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        plt.clear_figure()
        values = self._numbers.get(t.column, [])
        threshold = self.values.get(t.setting, 0)
        if not values:
            plt.title(f"{t.label}: no {t.label} recorded for this job")
            widget.refresh()
            return
        low, high, beyond = plot_range(values, threshold)
        plt.hist([min(v, high) for v in values], bins=BINS)
        plt.vline(threshold, "red")
        plt.xlim(low, high)
        edge = f" · {beyond:,} above {fmt(t, high)} drawn at the edge" if beyond else ""
        plt.title(f"{t.label} · threshold {fmt(t, threshold)} (drops {t.drops}){edge}")
        widget.refresh()

    def _step_of(self, rule: str) -> dict[str, Any] | None:
        return next((s for s in (self.counts or {}).get("rules", []) if s["rule"] == rule), None)

    def _draw_counts(self) -> None:
        for i, t in enumerate(self.rows):
            text = Text()
            text.append(f"{'▶ ' if i == self.selected else ''}{t.label}", style="bold")
            value = self.values.get(t.setting)
            if value is not None:
                text.append(f": drops {t.drops} {fmt(t, value)}")
                if value != self.base.get(t.setting):
                    text.append(f" (now {fmt(t, self.base[t.setting])})", style="bold yellow")
            text.append("\n")
            step = self._step_of(t.rule)
            if not self._numbers.get(t.column):
                text.append(f"no {t.label} recorded for this job\n", style="dim")
            if step is not None:
                text.append(step_text(step))
            elif self.counts is not None:
                text.append("off at this threshold (removes nothing)", style="dim")
            self.query_one(f"#counts-{t.setting}", Static).update(text)
        self.query_one("#explorer-status", Static).update(self.status_text())
        self.query_one("#explorer-summary", Static).update(self.summary_text())

    def status_text(self) -> Text:
        t = Text()
        paths = self.paths
        if paths is None:
            t.append("reading the paths…", style="dim")
            return t
        t.append(f"sample job {paths.sample_id}", style="bold")
        t.append(f" · {paths.sample_status}")
        if paths.job_id != paths.sample_id:
            t.append(f" · thresholds of filter job {paths.job_id}")
            if paths.current_filter == paths.job_id:
                t.append(" (the paths carry its verdicts)")
            else:
                shown = f" (the paths show those of filter job {paths.current_filter}; it keeps its own)"
                t.append(shown, style="yellow")
        elif paths.current_filter is None:
            t.append(" · thresholds of the sample job's config (no filter job has run on it)")
        else:
            t.append(" · thresholds of the sample job's config")
        if paths.sample_status != "completed":
            t.append(" · the counts are of the paths sampled so far; apply when sampling has finished", style="yellow")
        t.append(
            "\n↑/↓ pick a rule · ←/→ move its threshold (shift: ×10) · backspace reset · a apply as a new filter job",
            style="dim",
        )
        return t

    def summary_text(self) -> Text:
        t = Text()
        c = self.counts
        if c is None or self.paths is None:
            return t
        t.append(f"{c['paths']:,} paths of {c['questions']:,} questions ({c['correct']:,} correct)", style="bold")
        others = [s for s in c["rules"] if s["rule"] not in {r.rule for r in self.rows}]
        for s in others:
            t.append(f"\n{s['rule']} removes {s['removed']:,} paths, {s['questions_removed']:,} questions · ")
            t.append(removal_text(s).replace("\n", " · "))
        t.append("\nsurvive every rule: ")
        t.append(f"{c['survivors']:,} paths", style="bold green")
        t.append(f" of {c['rules'][-1]['questions_left'] if c['rules'] else c['questions']:,} questions")
        t.append(f", {c['survivors_correct']:,} correct · selected (one per question): ")
        t.append(f"{c['selected']:,}", style="bold green")
        t.append(f", {c['selected_correct']:,} correct")
        selection = c.get("selection")
        if selection is not None:
            t.append(f"\nselection ({selection['select']}) ")
            t.append(removal_text(selection).replace("\n", " · "))
        t.append(f"\n{SAME_RATE}", style="dim")
        decided = self.paths.decisions
        kept = ", ".join(f"{decided[d]:,} {d}" for d in ("accepted", "rejected", "ignored") if decided.get(d))
        t.append(f"\nhuman decisions: {kept or 'none'} (apply keeps them; accepted paths train, rejected do not)")
        changed = self.changed()
        if changed:
            moves = ", ".join(f"{k} {self.base[k]:g} → {v:g}" for k, v in changed.items())
            t.append(f"\nnot applied yet: {moves} (a: apply as a new filter job)", style="bold yellow")
        return t

    # -- keys ----------------------------------------------------------------------------------------
    def changed(self) -> dict[str, float]:
        return {k: v for k, v in self.values.items() if v != self.base.get(k)}

    def action_select(self, delta: int) -> None:
        if self.rows:
            self.selected = (self.selected + delta) % len(self.rows)
            self._mark_selected()

    def action_move(self, steps: int) -> None:
        if self.paths is None or not self.rows:
            return
        t = self.rows[self.selected]
        value = t.moved(self.values[t.setting], steps)
        if value == self.values[t.setting]:
            return
        self.values[t.setting] = value
        self._recount()
        self._draw_plot(t)

    def action_reset(self) -> None:
        if self.paths is None or not self.changed():
            return
        self.values = {t.setting: self.base[t.setting] for t in self.rows}
        self._recount()
        self._draw_all()

    def _recount(self) -> None:
        assert self.paths is not None
        self._request += 1
        self._count(self._request, self.paths, dict(self.values))
        self._draw_counts()  # the thresholds now; the counts when the worker has them

    def action_apply(self) -> None:
        from sert_tui.screens.modals import ConfirmScreen

        paths = self.paths
        if paths is None:
            return
        changed = self.changed()
        moves = "\n".join(f"  {k}: {self.base[k]:g} → {v:g}" for k, v in changed.items()) or "  (no threshold moved)"
        decided = sum(paths.decisions.values())
        question = (
            f"Run a new filter job over the paths of sample job {paths.sample_id}?\n{moves}\n"
            f"The {decided:,} human decisions on its paths are kept; the paths then show the new filter job's "
            "verdicts, and a config with these settings trains on its selection."
        )
        settings = paths.settings(self.values)

        def done(yes: bool | None) -> None:
            if yes:
                self._apply(paths.sample_id, settings)

        self.app.push_screen(ConfirmScreen(question, yes="Apply", no="Keep exploring"), done)

    @work(thread=True, exclusive=True, group="explorer-apply", exit_on_error=False)
    def _apply(self, sample_id: int, settings: Any) -> None:
        from engine.filtering.stage import refilter

        lines: list[str] = []
        try:
            job = refilter(workspace_app(self).db, sample_id, settings, lines.append)
        except Exception as exc:
            self.post_message(self.Failed(f"could not apply: {exc}"))
            return
        assert job.id is not None
        new = not any("already completed" in line for line in lines)
        self.post_message(self.Applied(job.id, new, dict(job.summary or {})))

    def on_filter_explorer_screen_applied(self, message: Applied) -> None:
        self.applied.append(message.job_id)
        self._fresh = True
        s = message.summary
        if message.new:
            self.notify(
                f"filter job {message.job_id}: {s.get('selected', 0):,} paths selected of {s.get('paths', 0):,}; "
                "decisions kept",
                timeout=6,
            )
        else:
            self.notify(f"the paths already carry these settings (filter job {message.job_id})", timeout=6)
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()
