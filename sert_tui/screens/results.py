"""Results: the paper's Table II comparison across runs with 95% intervals and the majority baseline (a table and
a plot of interval bars), every evaluation with its metrics, and per-question predictions of one evaluation or of
two side by side (``d``: only the questions where they disagree) with their paired comparison.

The table, the intervals, the majority row and the comparison come from engine.evaluation.report and
engine.evaluation.stats, the functions behind ``sert-tui report runs|compare``: the app and the CLI show the
same numbers. Like the reports, the screen shows evaluations of completed eval jobs only; a newer failed,
cancelled or running one is a note under the tables, never in place of the completed one."""

from __future__ import annotations

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Label, Static
from textual_plotext import PlotextPlot

from db.app_queries import PredictionPair
from db.vocabulary import MAJORITY
from engine.evaluation.report import COMPARE_TEST, EvalRow, TableLine, UnfinishedNote, majority_rows, table_two
from engine.evaluation.stats import Clustered, clustered_compare, fmt_interval
from sert_tui.context import workspace_app

POLL_SECONDS = 2.0


def pct(value: float | None) -> str:
    """Acc and Fmt are stored as fractions (0-1); shown as percentages like the paper."""
    if value is None:
        return "–"
    return f"{100 * value:.2f}" if value <= 1.0 else f"{value:.2f}"


def num(value: float | None, fmt: str = ".2f") -> str:
    return "–" if value is None else format(value, fmt)


def judge_keys(rows: list[EvalRow]) -> list[str]:
    keys: set[str] = set()
    for r in rows:
        keys |= {k for k, v in (r.scores or {}).items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return sorted(keys)


class ResultsScreen(Screen):
    """Table II across runs and the evaluations behind it."""

    HELP_TITLE = "Results"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the previous screen", id="results.back"),
        Binding(
            "m",
            "mark",
            "Mark for side by side",
            tooltip="mark the highlighted evaluation as A; p / enter on another shows both side by side",
            id="results.mark",
        ),
        Binding(
            "enter",
            "predictions",
            "Predictions",
            show=False,
            tooltip="per-question predictions of the highlighted evaluation (beside A, if marked)",
            id="results.open",
        ),
        Binding(
            "p",
            "predictions",
            "Predictions",
            tooltip="per-question predictions of the highlighted evaluation (beside A, if marked)",
            id="results.predictions",
        ),
    ]

    class Loaded(Message):
        def __init__(self, rows: list[EvalRow], majority: list[EvalRow], notes: list[UnfinishedNote]) -> None:
            super().__init__()
            self.rows = rows
            self.majority = majority
            self.notes = notes

    def __init__(self, focus_job: int | None = None) -> None:
        super().__init__()
        self.focus_job = focus_job
        self.rows: list[EvalRow] = []
        self.majority: list[EvalRow] = []
        self.notes: list[UnfinishedNote] = []  # unfinished evaluations newer than the ones shown
        self.marked: int | None = None
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        with VerticalScroll(id="results"):
            yield Label(
                "Accuracy % [95% Wilson interval] (the paper's Table II layout; majority: always the most common "
                "gold answer)",
                classes="section-title",
            )
            yield DataTable(id="table-two", cursor_type="row", zebra_stripes=True)
            yield PlotextPlot(id="acc-plot")
            yield Label(
                "Evaluations (Acc / Fmt in %, Len in tokens, Rep as a rate; judge scores 0–10)", classes="section-title"
            )
            yield DataTable(id="evals", cursor_type="row", zebra_stripes=True)
            yield Static("", id="results-hint", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Results"
        self.query_one("#evals", DataTable).focus()
        self.reload()
        self.set_interval(POLL_SECONDS, self.reload)

    @work(thread=True, exclusive=True, group="results-read", exit_on_error=False)
    def reload(self) -> None:
        from engine.evaluation.report import all_evaluations, unfinished

        try:
            with workspace_app(self).db.connect() as conn:
                rows, notes = unfinished(all_evaluations(conn))
                majority = majority_rows(conn, rows)
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"could not read evaluations: {exc}", severity="error")
            return
        self.post_message(self.Loaded(rows, majority, notes))

    def on_results_screen_loaded(self, message: Loaded) -> None:
        first = not self.loaded
        self.loaded = True
        if message.rows == self.rows and message.majority == self.majority and message.notes == self.notes:
            return
        self.rows = message.rows
        self.majority = message.majority
        self.notes = message.notes
        self._draw()
        if first and self.focus_job is not None:
            ids = [r.id for r in self.rows if r.job_id == self.focus_job]
            if ids:
                self.query_one("#evals", DataTable).move_cursor(row=self._index(ids[0]))

    def _index(self, eval_id: int) -> int:
        return next(i for i, r in enumerate(self.rows) if r.id == eval_id)

    def _draw(self) -> None:
        labels, lines = table_two(self.rows + self.majority)
        t2 = self.query_one("#table-two", DataTable)
        t2.clear(columns=True)
        t2.add_column("student", key="student")
        t2.add_column("dataset / split", key="dataset")
        for label in labels:
            t2.add_column(label, key=label)
        for line in lines:
            cells = [line.student, f"{line.dataset} / {line.split}"]
            for label in labels:
                r = line.cells.get(label)
                cells.append(f"{fmt_interval(r.acc, r.acc_ci)} n={r.n}" if r else "–")
            t2.add_row(*cells)
        self._plot(labels, lines)

        table = self.query_one("#evals", DataTable)
        cursor = table.cursor_row
        keys = judge_keys(self.rows)
        table.clear(columns=True)
        for col in (
            "",
            "id",
            "job",
            "label",
            "model",
            "ckpt step",
            "dataset",
            "split",
            "n",
            "Acc",
            "Fmt",
            "Len",
            "Rep",
        ):
            table.add_column(col, key=col or "mark")
        for k in keys:
            table.add_column(k, key=f"judge:{k}")
        for r in self.rows:
            cells = [
                "A" if r.id == self.marked else "",
                str(r.id),
                str(r.job_id),
                r.label or "(unlabelled)",
                r.model_ref,
                "" if r.checkpoint_step is None else str(r.checkpoint_step),
                r.dataset,
                r.split,
                str(r.n),
                fmt_interval(r.acc, r.acc_ci),
                fmt_interval(r.fmt, r.fmt_ci),
                num(r.len, ".1f"),
                num(r.rep, ".3f"),
                *(num((r.scores or {}).get(k)) for k in keys),
            ]
            table.add_row(*cells, key=str(r.id))
        if self.rows:
            table.move_cursor(row=min(cursor, len(self.rows) - 1))
        hint = Text()
        if not self.rows:
            hint.append(
                "No evaluation of a completed eval job yet: run the eval stage (or `all`) of a config.", style="dim"
            )
        else:
            hint.append(
                "m marks an evaluation as A; p (or enter) opens predictions, beside A when marked.", style="dim"
            )
        for note in self.notes:
            hint.append(f"\nnote: {note.text()}", style="yellow")
        self.query_one("#results-hint", Static).update(hint)

    def _plot(self, labels: list[str], lines: list[TableLine]) -> None:
        """Accuracy with its interval bar per label, for each Table II line, and the majority line."""
        widget = self.query_one("#acc-plot", PlotextPlot)
        plt = widget.plt
        plt.clear_figure()
        plt.title("Accuracy % with 95% intervals (dots: accuracy; bars: interval; horizontal line: majority)")
        models = [lbl for lbl in labels if lbl != MAJORITY]
        if not lines or not models:
            widget.refresh()
            return
        width = 0.8 / max(1, len(lines))
        for li, line in enumerate(lines):
            xs, ys = [], []
            for xi, label in enumerate(models):
                r = line.cells.get(label)
                if r is None or r.acc is None or r.acc_ci is None:
                    continue
                x = xi + 1 + (li - (len(lines) - 1) / 2) * width
                lo, hi = (100 * v for v in r.acc_ci)
                plt.plot([x, x], [lo, hi], marker="braille")
                xs.append(x)
                ys.append(100 * r.acc)
            if xs:
                plt.scatter(xs, ys, marker="●", label=f"{line.student} · {line.dataset}/{line.split}")
            maj = line.cells.get(MAJORITY)
            if maj is not None and maj.acc is not None:
                plt.hline(100 * maj.acc)
        plt.xticks(list(range(1, len(models) + 1)), models)
        plt.ylim(0, 100)
        plt.xlim(0.4, len(models) + 0.6)
        widget.refresh()

    def current(self) -> EvalRow | None:
        table = self.query_one("#evals", DataTable)
        if not self.rows or not (0 <= table.cursor_row < len(self.rows)):
            return None
        return self.rows[table.cursor_row]

    def action_mark(self) -> None:
        row = self.current()
        if row is None:
            return
        self.marked = None if self.marked == row.id else row.id
        table = self.query_one("#evals", DataTable)
        for r in self.rows:
            table.update_cell(str(r.id), "mark", "A" if r.id == self.marked else "")

    @on(DataTable.RowSelected, "#evals")
    def _selected(self, _event: DataTable.RowSelected) -> None:
        self.action_predictions()

    def action_predictions(self) -> None:
        row = self.current()
        if row is None:
            return
        if self.marked is not None and self.marked != row.id:
            a = next(r for r in self.rows if r.id == self.marked)
            self.app.push_screen(PredictionsScreen(a, row))
        else:
            self.app.push_screen(PredictionsScreen(row, None))

    def action_back(self) -> None:
        self.app.pop_screen()


def _eval_title(r: EvalRow) -> str:
    return f"eval {r.id} {r.label or '(unlabelled)'} · {r.model_ref} · {r.dataset}/{r.split}"


def side_by_side(pairs: list[PredictionPair]) -> Clustered:
    """A - B on the questions both answered: one evaluation per side, the one-seed case of the clustered
    comparison (``report compare`` computes the same from the same outcomes)."""
    a = {p.question_id: [bool(p.a["correct"])] for p in pairs if p.a is not None}
    b = {p.question_id: [bool(p.b["correct"])] for p in pairs if p.b is not None}
    return clustered_compare(a, b)


def _mark(p: dict | None) -> Text:
    if p is None:
        return Text("–", style="dim")
    return Text("✓", style="green") if p["correct"] else Text("✗", style="bold red")


class PredictionsScreen(Screen):
    """Per-question predictions of one evaluation, or two side by side."""

    HELP_TITLE = "Predictions"
    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="back to the results", id="predictions.back"),
        Binding(
            "d",
            "toggle_disagree",
            "Only disagreements",
            tooltip="only the questions where the two runs differ in correctness (side by side only)",
            id="predictions.only_disagree",
        ),
    ]

    class Loaded(Message):
        def __init__(self, pairs: list[PredictionPair], comparison: Clustered | None) -> None:
            super().__init__()
            self.pairs = pairs
            self.comparison = comparison

    def __init__(self, a: EvalRow, b: EvalRow | None) -> None:
        super().__init__()
        self.a, self.b = a, b
        self.pairs: list[PredictionPair] = []
        self.comparison: Clustered | None = None  # A - B on the questions both answered (side by side only)
        self.shown: list[PredictionPair] = []
        self.only_disagree = False
        self.loaded = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="pred-title", markup=False)
        with Horizontal(id="pred-main"):
            yield DataTable(id="pred-table", cursor_type="row", zebra_stripes=True)
            with VerticalScroll(id="pred-detail"):
                yield Static("", id="pred-detail-body", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = "Predictions"
        table = self.query_one("#pred-table", DataTable)
        table.add_column("q", key="q")
        table.add_column("question", key="question")
        table.add_column("gold", key="gold")
        table.add_column("A answer", key="a")
        table.add_column("A", key="a_ok")
        if self.b is not None:
            table.add_column("B answer", key="b")
            table.add_column("B", key="b_ok")
        self._title()
        table.focus()
        self.load()

    def _title(self) -> None:
        t = Text()
        t.append("A: ", style="bold")
        t.append(_eval_title(self.a))
        if self.b is not None:
            t.append("\nB: ", style="bold")
            t.append(_eval_title(self.b))
        c = self.comparison
        if c is not None and c.n:
            t.append("\nA - B: ", style="bold")
            t.append(
                f"{100 * c.diff:+.1f} pts [{100 * c.diff_ci[0]:+.1f}, {100 * c.diff_ci[1]:+.1f}] (95% bootstrap over "
                f"{c.n} questions), A only / B only {c.a_only} / {c.b_only}, p = {c.p_value:.3g}: {COMPARE_TEST}"
            )
        self.query_one("#pred-title", Static).update(t)

    @work(thread=True, exclusive=True, group="pred-read", exit_on_error=False)
    def load(self) -> None:
        from db import app_queries as q

        try:
            with workspace_app(self).db.connect() as conn:
                pairs = q.prediction_pairs(conn, self.a.id, self.b.id if self.b else None)
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"could not read predictions: {exc}", severity="error")
            return
        self.post_message(self.Loaded(pairs, side_by_side(pairs) if self.b is not None else None))

    def on_predictions_screen_loaded(self, message: Loaded) -> None:
        self.pairs = message.pairs
        self.comparison = message.comparison
        self._title()
        self._draw()
        self.loaded = True

    def _draw(self) -> None:
        table = self.query_one("#pred-table", DataTable)
        table.clear()
        pairs = self.pairs
        if self.only_disagree and self.b is not None:
            pairs = [p for p in pairs if (p.a or {}).get("correct") != (p.b or {}).get("correct")]
        self.shown = pairs
        for p in pairs:
            cells: list = [
                str(p.question_index),
                " ".join(p.question.split())[:40],
                p.gold,
                (p.a or {}).get("answer") or "",
                _mark(p.a),
            ]
            if self.b is not None:
                cells += [(p.b or {}).get("answer") or "", _mark(p.b)]
            table.add_row(*cells, key=str(p.question_id))
        self._detail()

    @on(DataTable.RowHighlighted, "#pred-table")
    def _highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self._detail()

    def _detail(self) -> None:
        table = self.query_one("#pred-table", DataTable)
        body = self.query_one("#pred-detail-body", Static)
        if not self.shown or not (0 <= table.cursor_row < len(self.shown)):
            body.update(Text("(no predictions)", style="dim"))
            return
        p = self.shown[table.cursor_row]
        t = Text()
        t.append(f"Question #{p.question_index}\n", style="bold")
        t.append(p.question + "\n\n")
        t.append("Gold answer: ", style="bold")
        t.append(p.gold + "\n")
        for name, pred in (("A", p.a), ("B", p.b)) if self.b is not None else (("A", p.a),):
            t.append(f"\n{name}: ", style="bold underline")
            if pred is None:
                t.append("no prediction for this question\n", style="dim")
                continue
            t.append_text(_mark(pred))
            t.append(
                f" answer {pred['answer']!r} · {'well formed' if pred['well_formed'] else 'malformed'} · "
                f"{pred['tokens']} tokens\n"
            )
            scores = {k: v for k, v in (pred.get("scores") or {}).items() if isinstance(v, int | float)}
            if scores:
                t.append("judge: " + ", ".join(f"{k} {v:g}" for k, v in scores.items()) + "\n", style="dim")
            t.append(pred["output"] + "\n")
        body.update(t)

    def action_toggle_disagree(self) -> None:
        if self.b is None:
            self.notify("side by side only: mark one evaluation with m, then open another")
            return
        self.only_disagree = not self.only_disagree
        self._draw()

    def action_back(self) -> None:
        self.app.pop_screen()
