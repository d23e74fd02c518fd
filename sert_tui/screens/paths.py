"""Paths: browse a job's reasoning paths page by page and accept / reject / ignore them (Prodigy's keys).

Reads happen in worker threads (keyset pages from ``db.app_queries``); a decision shows on screen at once and
is written by the app's ``DecisionWriter`` (``sert_tui.services.decisions``) in order, one transaction per key
press or bulk action, or kept in the workspace's journal of pending decisions when it cannot be.
While sampling runs, a poll every second re-reads the page the person is on (anchored at its first id, so
the place is kept) and the training-set counts.

Opened on a filter job, the screen shows its sample job's paths with that filter job's own verdicts, passed and
selected (``filter_verdicts``, left-joined per path by its primary key: the page still walks the
``(job_id, id)`` index of ``paths``), so an older filter job shows its own judgement, not the newest one's. Opened on
a sample job, it shows the display copy on the path rows (its current filter job's), through the ``paths`` indexes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, replace

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Input, Static

from db.app_queries import REVIEW_WINDOW_S, RULES, JobInfo, Page, PathCounts, PathFilter, PathRow
from db.page_marks import QuestionMarks
from db.vocabulary import FILTER, SAMPLE
from sert_tui.context import workspace_app
from sert_tui.services.decisions import Change, DecisionWriter
from sert_tui.widgets.path_table import Column, PathTable

POLL_SECONDS = 1.0
PAGE_MAX_AGE = 5.0  # seconds; the open page is re-read at once when anything changed (decisions of others: 5 s)
COUNTS_MAX_AGE = 10.0  # seconds; counts are re-read sooner whenever paths, the job or a decision changed
PAGE_SIZE = 100
UNDO_LEVELS = 500


# -- rendering ------------------------------------------------------------------------------------------
#: Verdicts that are not a rule a path passes or fails (the per-question selection has its own column).
NOT_RULES = ("selection",)


def rule_names(verdicts: dict) -> list[str]:
    """The four rules of the paper in order, then any extra one present (the optional correctness rule)."""
    return [*RULES, *sorted(k for k in verdicts if k not in RULES and k not in NOT_RULES)]


def _num(value: float | None, fmt: str) -> str:
    return "" if value is None else format(value, fmt)


def snippet(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


COLUMNS = (
    Column("id", "id", 7, right=True),
    Column("q", "q", 5, right=True),
    # the decision right after the path and its question: a narrow terminal cuts the last columns, never it
    Column("decision", "decision", 9),
    Column("question", "question", 0, min_width=16),
    Column("src", "src", 4),
    Column("branch", "branch", 12),
    Column("tok", "tok", 4, right=True),
    Column("rep2", "rep-2", 6, right=True),
    Column("ppl", "ppl", 7, right=True),
    Column("conf", "conf", 5, right=True),
    Column("agr", "agr", 3, right=True),
    Column("rules", "rules", 5),
    Column("sel", "sel", 3),
    Column("ok", "ok", 2),
    Column("dup", "dup", 7),
    # last: at 160 columns beside the detail pane the table ends at dup, and the detail shows the path's score
    Column("glp", "glp", 6, right=True),  # gold log-likelihood (filters.select = "gold_likelihood")
)

DECISION_PIECE = {
    "accepted": ("✓ accept", "bold green"),
    "rejected": ("✗ reject", "bold red"),
    "ignored": ("– ignore", "dim"),
    "chosen": ("★ chosen", "bold yellow"),
    "no-path": ("∅ no path", "dim red"),
}


def _badge_piece(verdict: dict | None) -> tuple[str, str]:
    if not verdict or "pass" not in verdict:
        return ("·", "dim")
    return ("✓", "green") if verdict["pass"] else ("✗", "bold red")


def row_cells(r: PathRow) -> list[list[tuple[str, str]]]:
    """The cells of one table row as (text, style) pieces."""
    verdicts = r.verdicts or {}
    return [
        [(str(r.id), "")],
        [(str(r.question_index), "")],
        [DECISION_PIECE[r.decision]] if r.decision in DECISION_PIECE else [],
        [(snippet(r.question, 60), "")],
        [("self" if r.source == "self" else "tchr", "" if r.source == "self" else "magenta")],
        [(f"{r.branch}.{r.sample} {snippet(repr(r.branch_token), 7)}" if r.source == "self" else "", "")],
        [(str(r.tokens), "")],
        [(_num(r.rep2, ".3f"), "")],
        [(_num(r.perplexity, ".1f"), "")],
        [(_num(r.confidence, ".3f"), "")],
        [("" if r.agreement is None else str(r.agreement), "")],
        [_badge_piece(verdicts.get(name)) for name in rule_names(verdicts)],
        [("★", "bold yellow")] if r.selected else [],
        [] if r.correct is None else [("✓", "green") if r.correct else ("✗", "red")],
        [] if r.duplicate_of is None else [(f"={r.duplicate_of}", "yellow")],
        [(_num(r.gold_logp, ".2f"), "")],
    ]


def detail_text(r: PathRow, require_correct: bool | None = None) -> Text:
    t = Text()
    t.append(f"Question #{r.question_index}", style="bold")
    t.append(f"   path {r.id} · source {r.source}")
    if r.source == "self":
        t.append(f" · branch {r.branch} ({r.branch_token!r}) sample {r.sample}")
    t.append("\n")
    t.append(r.question + "\n\n")
    t.append("Gold answer: ", style="bold")
    t.append(f"{r.gold}\n")
    t.append("Parsed answer: ", style="bold")
    t.append(f"{r.answer if r.answer is not None else '(none)'}   ")
    if r.correct is None:
        t.append("correctness unknown", style="dim")
    else:
        t.append("✓ correct" if r.correct else "✗ incorrect", style="green" if r.correct else "bold red")
    t.append("\n\n")
    t.append("Rules", style="bold")
    t.append(
        f"   tokens {r.tokens} · rep-2 {_num(r.rep2, '.3f') or '?'} · perplexity {_num(r.perplexity, '.2f') or '?'}"
        f" · confidence {_num(r.confidence, '.3f') or '–'}"
        f" · gold log-likelihood {_num(r.gold_logp, '.3f') or '–'}"
        f" · agreement {'–' if r.agreement is None else r.agreement}\n"
    )
    t.append(
        "  confidence: mean p(top-1) − p(top-2) over the answer's tokens (CoT-decoding); agreement: paths of "
        "this question giving the same answer (self-consistency); gold log-likelihood (glp): of the gold answer "
        "sentence after the path (LaTRO; select = gold_likelihood)\n",
        style="dim",
    )
    verdicts = r.verdicts or {}
    if not verdicts:
        t.append("  not filtered yet\n", style="dim")
    for name in rule_names(verdicts):
        v = verdicts.get(name)
        t.append("  ")
        t.append(*_badge_piece(v))
        t.append(f" {name:<11}")
        if v is None:
            t.append("(no verdict)", style="dim")
        else:
            t.append(str(v.get("reason", "")))
        t.append("\n")
    if require_correct is not None:
        t.append(
            f"  correctness filter: {'on' if require_correct else 'off'} (an option; the paper has none)\n",
            style="dim",
        )
    t.append("Selected: ", style="bold")
    t.append("★ yes" if r.selected else "no")
    selection = verdicts.get("selection")
    if isinstance(selection, dict) and selection.get("reason"):
        t.append(f" ({selection['reason']})", style="dim")
    t.append("   Decision: ", style="bold")
    t.append(*DECISION_PIECE.get(r.decision or "", ("none", "dim")))
    if r.duplicate_of is not None:
        t.append(f"\nDuplicate of path {r.duplicate_of}", style="bold yellow")
        t.append(" (same question, same text after normalisation; D rejects the undecided ones)", style="dim")
    t.append("\n\n")
    t.append("Path (wrapped)\n", style="bold underline")
    t.append(r.text + "\n\n")
    t.append("Path (raw)\n", style="bold underline")
    t.append(repr(r.text), style="dim")
    return t


#: The orders of the rows of a page (``S`` cycles them): name -> (what the status line says, the sort key).
#: Missing values go last; ties keep the id order.
SORTS: dict[str, tuple[str, Callable[[PathRow], tuple]]] = {
    "id": ("id", lambda r: (r.id,)),
    "confidence": ("confidence ↓", lambda r: (r.confidence is None, -(r.confidence or 0.0), r.id)),
    "agreement": ("agreement ↓", lambda r: (r.agreement is None, -(r.agreement or 0), r.id)),
}


def sort_rows(rows: list[PathRow], order: str) -> list[PathRow]:
    """The page's rows in ``order`` (:data:`SORTS`); the page itself stays the keyset page of ids."""
    return sorted(rows, key=SORTS[order][1])


# -- the screen --------------------------------------------------------------------------------------------
@dataclass
class CursorSpec:
    kind: str = "keep"  # keep | id | undecided | index | last
    value: int = 0


def review_line(c: PathCounts) -> str:
    """Review speed, the share of the training set decided by hand, and the latent-reasoning coverage."""
    per_minute = c.recent_decisions / (REVIEW_WINDOW_S / 60)
    parts = [f"review: {per_minute:.1f} decisions/min (last {REVIEW_WINDOW_S // 60} min)"]
    if c.training_set:
        parts.append(f"{100 * c.accepted / c.training_set:.0f}% of the training set accepted by hand")
    cov = c.coverage
    if cov and cov.get("questions"):

        def share(key: str) -> str:
            return "–" if cov.get(key) is None else f"{100 * cov[key]:.0f}%"

        zero = cov.get("zero_shot_acc")
        parts.append(
            f"a correct path: {share('any_correct')} of questions, {share('any_correct_filtered')} after the filters, "
            f"selected correct {share('selected_correct')}"
            + ("" if zero is None else f" (greedy zero-shot {100 * zero:.0f}%)")
        )
    return " · ".join(parts)


class PathsScreen(Screen):
    """The paths of one job; a decision per key press, written at once."""

    HELP_TITLE = "Paths (curation)"
    BINDINGS = [
        Binding(
            "a", "decide('accepted')", "Accept", tooltip="accept the path; on to the next undecided", id="paths.accept"
        ),
        Binding(
            "x", "decide('rejected')", "Reject", tooltip="reject the path; on to the next undecided", id="paths.reject"
        ),
        Binding(
            "space",
            "decide('ignored')",
            "Ignore",
            tooltip="ignore the path; on to the next undecided",
            id="paths.ignore",
        ),
        Binding(
            "backspace", "undo", "Undo", tooltip="undo the last decision or bulk action (many levels)", id="paths.undo"
        ),
        Binding(
            "A",
            "accept_question",
            "Accept passed (question)",
            tooltip="accept every undecided path of the highlighted question that passed all rules (one undo)",
            id="paths.accept_question",
        ),
        Binding(
            "P",
            "accept_page",
            "Accept passed (page)",
            tooltip="accept every undecided path on this page that passed all rules (one undo)",
            id="paths.accept_page",
        ),
        Binding(
            "D",
            "reject_duplicates",
            "Reject duplicates",
            show=False,
            tooltip="reject every undecided duplicate path (dup column: same question, same normalised text as "
            "an earlier path) of the job, or of the question when f shows one; decisions made are kept (one undo)",
            id="paths.reject_duplicates",
        ),
        Binding(
            "right_square_bracket", "next_page", "Next page", tooltip="the next page of paths", id="paths.next_page"
        ),
        Binding(
            "left_square_bracket", "prev_page", "Prev page", tooltip="the previous page of paths", id="paths.prev_page"
        ),
        Binding("g", "first_page", "First page", show=False, tooltip="the first page", id="paths.first_page"),
        Binding("G", "last_page", "Last page", show=False, tooltip="the last page", id="paths.last_page"),
        Binding(
            "d",
            "cycle('decision')",
            "Decision filter",
            show=False,
            tooltip="cycle decision filter: any → undecided → accepted → rejected → ignored → chosen → no path "
            "(the review screen's)",
            id="paths.filter_decision",
        ),
        Binding(
            "v",
            "cycle('passed')",
            "Verdict filter",
            show=False,
            tooltip="cycle verdict filter: any → passed every rule → failed a rule",
            id="paths.filter_verdict",
        ),
        Binding(
            "s",
            "cycle('selected')",
            "Selected filter",
            show=False,
            tooltip="cycle selected filter: any → selected → not selected",
            id="paths.filter_selected",
        ),
        Binding(
            "o",
            "cycle('source')",
            "Source filter",
            show=False,
            tooltip="cycle source filter: any → self → teacher",
            id="paths.filter_source",
        ),
        Binding(
            "c",
            "cycle('correct')",
            "Correct filter",
            show=False,
            tooltip="cycle correctness filter: any → correct → incorrect",
            id="paths.filter_correct",
        ),
        Binding(
            "f",
            "toggle_question",
            "This question only",
            show=False,
            tooltip="only the paths of the highlighted question (again: all questions)",
            id="paths.this_question",
        ),
        Binding(
            "S",
            "cycle_sort",
            "Sort page",
            show=False,
            tooltip="order the rows of this page: id → confidence (highest first) → agreement (highest first); "
            "with f (one question) that orders the question's paths",
            id="paths.sort",
        ),
        Binding(
            "w",
            "explore",
            "Filter explorer",
            tooltip="the filter explorer of this sample job: histograms with the thresholds, what-if counts, "
            "apply as a new filter job (decisions are kept)",
            id="paths.explore",
        ),
        Binding(
            "r",
            "review",
            "Review",
            show=False,
            tooltip="the review screen of this job: one question at a time, 1-9 choose its training path",
            id="paths.review",
        ),
        Binding(
            "slash",
            "search",
            "Search",
            tooltip="search question text (enter applies, escape cancels; empty clears)",
            id="paths.search",
        ),
        Binding(
            "F",
            "clear_filters",
            "Clear filters",
            show=False,
            tooltip="every filter back to any",
            id="paths.clear_filters",
        ),
        Binding(
            "escape", "back", "Back", tooltip="close the search box, else back to the previous screen", id="paths.back"
        ),
    ]

    CYCLES: dict[str, tuple] = {
        "decision": (None, "undecided", "accepted", "rejected", "ignored", "chosen", "no-path"),
        "passed": (None, True, False),
        "selected": (None, True, False),
        "source": (None, "self", "teacher"),
        "correct": (None, True, False),
    }

    class Loaded(Message):
        def __init__(
            self,
            request: int,
            poll: bool,
            flt: PathFilter,
            page: Page,
            counts: PathCounts | None,
            info: JobInfo | None,
            committed: int,
            cursor: CursorSpec,
        ) -> None:
            super().__init__()
            self.request, self.poll, self.flt, self.page = request, poll, flt, page
            self.counts, self.info, self.committed, self.cursor = counts, info, committed, cursor

    class Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class Counted(Message):
        """The training-set counts, read after the page they go with is on screen."""

        def __init__(self, counts: PathCounts, info: JobInfo | None) -> None:
            super().__init__()
            self.counts, self.info = counts, info

    class OpenExplorer(Message):
        """The filter explorer of this screen's sample (or filter) job; the app opens it."""

        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    class OpenReview(Message):
        """The review screen of this screen's job; the app opens it."""

        def __init__(self, job_id: int) -> None:
            super().__init__()
            self.job_id = job_id

    def __init__(self, job_id: int, page_size: int = PAGE_SIZE) -> None:
        super().__init__()
        self.job_id = job_id
        self.paths_job: int | None = None
        #: A filter job's screen shows its own stored verdicts (db.app_queries.verdicts_job_id), a sample job's
        #: the display copy on its path rows; None until the first read.
        self.verdicts_job: int | None = None
        self.page_size = page_size
        self.flt = PathFilter()
        self.sort = "id"  # the order of the page's rows (SORTS)
        self.anchor = 0
        self.rows: list[PathRow] = []
        self.by_id: dict[int, PathRow] = {}
        self.has_prev = self.has_next = False
        self.counts = PathCounts()
        self.info: JobInfo | None = None
        self.undo_stack: list[list[Change]] = []
        self.local: dict[int, tuple[str | None, int]] = {}
        self.first_max_id: int | None = None
        self.loaded = threading.Event()  # set after the first page is on screen (tests, benchmarks)
        self.loads = 0  # pages put on screen by navigation (not by polls)
        self._request = 0
        self._polling = False
        self._poll_again = False
        self._counts_key: tuple | None = None
        self._counts_at = 0.0
        self._page_at = 0.0
        self._shown: dict[str, tuple] = {}
        self._coverage: tuple[tuple, dict] | None = None  # (the key it was read for, engine.filtering.coverage)
        self.marks = QuestionMarks()  # duplicate and agreement marks per question, between pages

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="paths-status", markup=False)
        yield Static("", id="trainset", markup=False)
        with Horizontal(id="paths-main"):
            yield PathTable(COLUMNS, row_cells, id="paths-table")
            with VerticalScroll(id="path-detail"):
                yield Static("", id="detail-body", markup=False)
        yield Input(placeholder="search question text (enter applies, escape cancels)", id="paths-search")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#paths-search", Input).display = False
        self.title = f"Paths · job {self.job_id}"
        self._load(CursorSpec("index", 0))
        self.set_interval(POLL_SECONDS, self.poll)

    @property
    def table(self) -> PathTable:
        return self.query_one("#paths-table", PathTable)

    @property
    def writer(self) -> DecisionWriter:
        return workspace_app(self).decision_writer

    # -- reading -------------------------------------------------------------------------------------
    def _load(self, cursor: CursorSpec, anchor: int | None = None, mode: str = "anchor", before: int = 0) -> None:
        self._request += 1
        self._read(self._request, False, self.flt, self.anchor if anchor is None else anchor, mode, before, cursor)

    def poll(self) -> None:
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self._poll_again = False
        self._read(self._request, True, self.flt, self.anchor, "anchor", 0, CursorSpec("keep"))

    @work(thread=True, exit_on_error=False, group="paths-read")
    def _read(
        self, request: int, poll: bool, flt: PathFilter, anchor: int, mode: str, before: int, cursor: CursorSpec
    ) -> None:
        import time

        from db import app_queries as q

        try:
            committed = self.writer.committed
            with workspace_app(self).db.connect() as conn:
                if self.paths_job is None:
                    self.verdicts_job = q.verdicts_job_id(conn, self.job_id)
                    self.paths_job = q.paths_job_id(conn, self.job_id)
                job, own = self.paths_job, self.verdicts_job
                if mode == "prev":
                    anchor = q.previous_anchor(conn, job, flt, before, self.page_size, own)
                elif mode == "last":
                    anchor = q.last_anchor(conn, job, flt, self.page_size, own)
                info = q.job_info(conn, self.job_id)
                key = (
                    q.max_path_id(conn, job),
                    committed,
                    info and (info.status, info.progress_done, info.message, info.finished_at),
                    # the filter stage rewrites the verdicts of a sample job's paths and names itself here
                    info and info.summary.get("filter_job"),
                )
                if poll and key == self._counts_key and time.monotonic() - self._page_at < PAGE_MAX_AGE:
                    self.post_message(self.Failed(""))  # nothing changed: ends the poll, no repaint
                    return
                # the marks of a question follow its paths and the filter job whose answers they carry
                self.marks.generation = own or (info and info.summary.get("filter_job"))
                page = q.page_paths(conn, job, flt, anchor, self.page_size, own, cache=self.marks)
                self._page_at = time.monotonic()
                # The counts cost a pass over the job's index entries (and the coverage one over its paths):
                # only when something may have changed, and after the page is on screen (the first time before,
                # so that the screen opens complete).
                stale = key != self._counts_key or time.monotonic() - self._counts_at > COUNTS_MAX_AGE
                counts = self._read_counts(conn, job, info, key) if stale and self._counts_key is None else None
            self.post_message(self.Loaded(request, poll, flt, page, counts, info, committed, cursor))
            if stale and counts is None:
                with workspace_app(self).db.connect() as conn:
                    self.post_message(self.Counted(self._read_counts(conn, job, info, key), info))
        except Exception as exc:
            self.post_message(self.Failed(f"{exc.__class__.__name__}: {exc}"))

    def _read_counts(self, conn, job: int, info: JobInfo | None, key: tuple) -> PathCounts:
        import time

        from db import app_queries as q

        teacher = info is not None and info.kind == "teacher"
        counts = q.path_counts(conn, job, with_correct=teacher, verdicts_job=self.verdicts_job)
        if info is not None and info.kind in (SAMPLE, FILTER):
            # A pass over the job's paths that no decision changes: again only when the paths, the job or its
            # filter job did (not after every key press).
            coverage_key = (key[0], *key[2:])
            if self._coverage is None or self._coverage[0] != coverage_key:
                from engine.filtering.coverage import coverage

                self._coverage = (coverage_key, coverage(conn, self.job_id))
            counts.coverage = self._coverage[1]
        self._counts_key, self._counts_at = key, time.monotonic()
        return counts

    def on_paths_screen_counted(self, message: Counted) -> None:
        self._show_counts(message.counts, message.info)

    def on_paths_screen_failed(self, message: Failed) -> None:
        self._poll_done()
        if message.error:
            self.notify(f"could not read the workspace: {message.error}", severity="error")

    def on_paths_screen_loaded(self, message: Loaded) -> None:
        if message.poll:
            self._poll_done()
            # A poll that raced a navigation or a filter change is stale.
            if message.request != self._request or message.flt != self.flt or message.page.anchor != self.anchor:
                self._show_counts(message.counts, message.info)
                return
        elif message.request != self._request:
            return
        self.flt = message.flt
        self.anchor = message.page.anchor
        self.has_prev, self.has_next = message.page.has_prev, message.page.has_next
        # Decisions made on screen but not yet written win over what the read saw.
        for r in message.page.rows:
            pending = self.local.get(r.id)
            if pending is not None and pending[1] > message.committed:
                r.decision = pending[0]
        self.local = {k: v for k, v in self.local.items() if v[1] > message.committed}
        self._show_rows(message.page.rows, message.cursor)
        self._show_counts(message.counts, message.info)
        if not message.poll:
            self.loads += 1
        if not self.loaded.is_set():
            import gc

            gc.freeze()  # the long-lived objects out of the collector's full passes (see screens/review.py)
        self.loaded.set()

    def _poll_done(self) -> None:
        self._polling = False
        if self._poll_again:
            self.poll()

    # -- drawing -------------------------------------------------------------------------------------
    def _show_rows(self, rows: list[PathRow], cursor: CursorSpec) -> None:
        table = self.table
        current = self.current_row()
        rows = sort_rows(rows, self.sort)
        old_ids = [r.id for r in self.rows]
        new_ids = [r.id for r in rows]
        self.rows = rows
        self.by_id = {r.id: r for r in rows}
        index = self._cursor_index(cursor, current)
        if old_ids == new_ids:
            changed = [i for i, (old, new) in enumerate(zip(table.rows, rows, strict=True)) if old != new]
            table.replace_rows(rows, changed)
            table.move_cursor(index)
            if changed:
                self._show_detail()
        else:
            table.set_rows(rows, index)

    def _cursor_index(self, cursor: CursorSpec, current: PathRow | None) -> int:
        rows = self.rows
        if not rows:
            return 0
        if cursor.kind == "keep":
            if current is not None:
                if current.id in self.by_id:
                    return self._index_of(current.id)
                # The row left the page (e.g. decided under the "undecided" filter): its successor.
                later = [i for i, r in enumerate(rows) if r.id > current.id]
                return later[0] if later else len(rows) - 1
            return min(self.table.cursor_row, len(rows) - 1)
        if cursor.kind == "id":
            if cursor.value in self.by_id:
                return self._index_of(cursor.value)
            later = [i for i, r in enumerate(rows) if r.id > cursor.value]
            return later[0] if later else len(rows) - 1
        if cursor.kind == "undecided":
            return next((i for i, r in enumerate(rows) if r.decision is None), 0)
        if cursor.kind == "last":
            return len(rows) - 1
        return max(0, min(cursor.value, len(rows) - 1))

    def _index_of(self, path_id: int) -> int:
        return next(i for i, r in enumerate(self.rows) if r.id == path_id)

    def _show_counts(self, counts: PathCounts | None, info: JobInfo | None) -> None:
        if counts is not None:
            self.counts = counts
        self.info = info
        counts = self.counts
        if self.first_max_id is None:
            self.first_max_id = counts.max_id
        self._update_static("#trainset", self.trainset_text())
        self._update_static("#paths-status", self.status_text())

    def _update_static(self, selector: str, text: Text) -> None:
        """Repaint a fixed-height line only when its text changed (no layout pass: it cannot grow)."""
        if self._shown.get(selector) == (text.plain, text.spans):
            return
        self._shown[selector] = (text.plain, text.spans)
        self.query_one(selector, Static).update(text, layout=False)

    def trainset_text(self) -> Text:
        c = self.counts
        t = Text()
        if self.info is not None and self.info.kind == "teacher":
            t.append("Teacher rationales (for distillation): ", style="bold")
            t.append(f"{c.total:,}", style="bold green")
            correct = "?" if c.correct is None else f"{c.correct:,}"
            t.append(f" · {correct} with the correct answer (distill keeps those by default)")
        else:
            t.append("Training set (self-train): ", style="bold")
            t.append(f"{c.training_set:,}", style="bold green")
            t.append(f" paths = {c.selected_kept:,} selected & not rejected + {c.accepted_extra:,} accepted by hand")
        t.append(
            f"\n{c.total:,} paths · {c.filtered:,} filtered · {c.passed:,} passed · {c.selected:,} selected · "
            f"{c.accepted:,} accepted · {c.rejected:,} rejected · {c.ignored:,} ignored · {c.undecided:,} undecided",
            style="dim",
        )
        t.append("\n" + review_line(c), style="dim")
        return t

    def status_text(self) -> Text:
        t = Text()
        info = self.info
        if info is not None:
            t.append(f"job {info.id} {info.kind}", style="bold")
            if info.label:
                t.append(f" {info.label!r}")
            t.append(f" · {info.status}")
            if info.progress:
                t.append(f" {info.progress}")
            if info.dataset:
                t.append(f" · {info.dataset}")
        if self.paths_job is not None and self.paths_job != self.job_id:
            t.append(f" · paths of job {self.paths_job}")
        if self.rows:
            t.append(f" · ids {self._first_id()}–{self._last_id()}")
            if self.sort != "id":
                t.append(f" · sorted by {SORTS[self.sort][0]} (S)", style="bold")
        else:
            t.append(" · no paths" + (" match the filters" if self.flt != PathFilter() else " yet"))
        t.append(" · ")
        t.append("[ prev page", style="" if self.has_prev else "dim")
        t.append(" · ")
        t.append("] next page", style="" if self.has_next else "dim")
        new = self.counts.max_id - (self.first_max_id or 0)
        if new > 0:
            t.append(f" · +{new:,} new since opened", style="bold cyan")
        t.append(
            "\nrules column: pattern · length · repetition · perplexity (· confidence · correctness when on)",
            style="dim",
        )
        t.append("\nfilters: ", style="bold")
        t.append(self.flt.describe())
        t.append(
            "  (d decision · v verdict · s selected · o source · c correct · f question · / search · F clear · S sort)",
            style="dim",
        )
        return t

    def _require_correct(self) -> bool | None:
        if self.info is None:
            return None
        filters = (self.info.config or {}).get("filters")
        if isinstance(filters, dict) and "require_correct" in filters:
            return bool(filters["require_correct"])
        return None

    def _show_detail(self) -> None:
        row = self.current_row()
        body = self.query_one("#detail-body", Static)
        body.update(detail_text(row, self._require_correct()) if row else Text("(no path)", style="dim"))

    def current_row(self) -> PathRow | None:
        if not self.rows:
            return None
        index = self.table.cursor_row
        return self.rows[index] if 0 <= index < len(self.rows) else None

    @on(PathTable.Highlighted, "#paths-table")
    def _highlighted(self, _event: PathTable.Highlighted) -> None:
        self._show_detail()

    # -- decisions -----------------------------------------------------------------------------------
    def apply_changes(self, changes: list[Change], undoable: bool = True) -> None:
        """Show the decisions now, queue them for writing, and remember the previous values for undo."""
        if not changes:
            return
        previous = [(pid, self._decision_of(pid)) for pid, _ in changes]
        seq = self.writer.submit(changes)
        table = self.table
        for pid, decision in changes:
            self.local[pid] = (decision, seq)
            row = self.by_id.get(pid)
            if row is not None:
                row.decision = decision
                table.refresh_row(self._index_of(pid))
        if undoable:
            self.undo_stack.append(previous)
            del self.undo_stack[:-UNDO_LEVELS]
        self._show_detail()
        self._after_write(seq)

    @work(thread=True, exit_on_error=False, group="paths-wait")
    def _after_write(self, seq: int) -> None:
        """Re-read (counts included) as soon as the writer has committed this decision."""
        self.writer.wait_for(seq, timeout=30)
        self.app.call_from_thread(self.poll)

    def _decision_of(self, path_id: int) -> str | None:
        if path_id in self.local:
            return self.local[path_id][0]
        row = self.by_id.get(path_id)
        return row.decision if row is not None else None  # off-page: only undecided ids reach here

    def action_decide(self, decision: str) -> None:
        row = self.current_row()
        if row is None:
            return
        index = self.table.cursor_row
        self.apply_changes([(row.id, decision)])
        self._advance(index)

    def _advance(self, index: int) -> None:
        """Move to the next undecided path: on this page, else on the next page."""
        for j in range(index + 1, len(self.rows)):
            if self.rows[j].decision is None:
                self.table.move_cursor(j)
                return
        if self.has_next:
            self._load(CursorSpec("undecided"), anchor=self._last_id() + 1)
        elif index + 1 < len(self.rows):
            self.table.move_cursor(index + 1)

    def action_undo(self) -> None:
        if not self.undo_stack:
            self.notify("nothing to undo")
            return
        previous = self.undo_stack.pop()
        self.apply_changes(previous, undoable=False)
        target = previous[0][0]
        if target in self.by_id:
            self.table.move_cursor(self._index_of(target))
        else:
            self._load(CursorSpec("id", target), anchor=target)
        self.notify(f"undone: {len(previous)} decision{'s' if len(previous) != 1 else ''}", timeout=2)

    def action_accept_page(self) -> None:
        changes = [(r.id, "accepted") for r in self.rows if r.passed and r.decision is None]
        if not changes:
            self.notify("no undecided path on this page passed every rule")
            return
        self.apply_changes(changes)
        self.notify(f"accepted {len(changes)} paths that passed the rules on this page (backspace undoes)")

    def action_accept_question(self) -> None:
        from db import app_queries as q

        row = self.current_row()
        if row is None or self.paths_job is None:
            return
        with workspace_app(self).db.connect() as conn:
            ids = q.question_passed_undecided(conn, self.paths_job, row.question_id, self.verdicts_job)
        ids = [pid for pid in ids if self._decision_of(pid) is None]
        if not ids:
            self.notify(f"no undecided path of question #{row.question_index} passed every rule")
            return
        self.apply_changes([(pid, "accepted") for pid in ids])
        self.notify(
            f"accepted {len(ids)} paths of question #{row.question_index} that passed the rules (backspace undoes)"
        )

    def action_reject_duplicates(self) -> None:
        if self.paths_job is None:
            return
        self._find_duplicates(self.paths_job, self.flt.question_id, self.writer.submitted)

    @work(thread=True, exit_on_error=False, group="paths-duplicates")
    def _find_duplicates(self, job: int, question_id: int | None, seq: int) -> None:
        """Read the undecided duplicates (a pass over the job's paths: off the UI thread) once the decisions
        made before the key press are settled, then reject them on the UI thread."""
        from db import duplicates

        self.writer.wait_for(seq, timeout=30)
        try:
            with workspace_app(self).db.connect() as conn:
                found = duplicates.find(conn, job, None if question_id is None else [question_id])
        except Exception as exc:
            self.app.call_from_thread(self.notify, f"could not read the workspace: {exc}", severity="error")
            return
        self.app.call_from_thread(self._reject_duplicates, found.undecided, question_id)

    def _reject_duplicates(self, ids: list[int], question_id: int | None) -> None:
        scope = "of the job" if question_id is None else "of this question"
        # A decision made on screen meanwhile (or not yet written) wins: only what is still undecided here.
        ids = [pid for pid in ids if self._decision_of(pid) is None]
        if not ids:
            self.notify(f"no undecided duplicate path {scope}")
            return
        self.apply_changes([(pid, "rejected") for pid in ids])
        self.notify(f"rejected {len(ids)} duplicate paths {scope} (backspace undoes)")

    # -- paging and filters ------------------------------------------------------------------------------
    def _first_id(self) -> int:
        return min(r.id for r in self.rows)

    def _last_id(self) -> int:
        return max(r.id for r in self.rows)

    def action_next_page(self) -> None:
        if self.has_next and self.rows:
            self._load(CursorSpec("index", 0), anchor=self._last_id() + 1)

    def action_prev_page(self) -> None:
        if self.has_prev and self.rows:
            self._load(CursorSpec("last"), mode="prev", before=self._first_id())

    def action_cycle_sort(self) -> None:
        orders = list(SORTS)
        self.sort = orders[(orders.index(self.sort) + 1) % len(orders)]
        current = self.current_row()
        self._show_rows(self.rows, CursorSpec("id", current.id) if current else CursorSpec("index", 0))
        self._update_static("#paths-status", self.status_text())

    def action_first_page(self) -> None:
        self._load(CursorSpec("index", 0), anchor=0)

    def action_last_page(self) -> None:
        self._load(CursorSpec("last"), mode="last")

    def set_filter(self, flt: PathFilter) -> None:
        self.flt = flt
        self._load(CursorSpec("index", 0), anchor=0)

    def action_cycle(self, name: str) -> None:
        values = self.CYCLES[name]
        current = getattr(self.flt, name)
        nxt = values[(values.index(current) + 1) % len(values)]
        self.set_filter(replace(self.flt, **{name: nxt}))

    def action_toggle_question(self) -> None:
        row = self.current_row()
        if self.flt.question_id is not None:
            self.set_filter(replace(self.flt, question_id=None))
        elif row is not None:
            self.set_filter(replace(self.flt, question_id=row.question_id))

    def action_clear_filters(self) -> None:
        self.set_filter(PathFilter())

    def action_search(self) -> None:
        box = self.query_one("#paths-search", Input)
        box.value = self.flt.search
        box.display = True
        box.focus()

    @on(Input.Submitted, "#paths-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        box = self.query_one("#paths-search", Input)
        box.display = False
        self.table.focus()
        self.set_filter(replace(self.flt, search=event.value.strip()))

    def action_explore(self) -> None:
        if self.info is not None and self.info.kind not in (SAMPLE, FILTER):
            self.notify(f"job {self.job_id} is a {self.info.kind} job: the filter explorer opens a sample job's paths")
            return
        self.post_message(self.OpenExplorer(self.job_id))

    def action_review(self) -> None:
        if self.info is not None and self.info.kind not in (SAMPLE, FILTER):
            self.notify(f"job {self.job_id} is a {self.info.kind} job: the review screen opens a sample job's paths")
            return
        self.post_message(self.OpenReview(self.job_id))

    def action_back(self) -> None:
        box = self.query_one("#paths-search", Input)
        if box.display:
            box.display = False
            self.table.focus()
            return
        self.app.pop_screen()
