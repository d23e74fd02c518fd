"""Review: one question at a time, its candidate paths numbered; a key chooses the question's training path.

Prodigy's choice interface and Argilla's focus view, for paths. ``1``-``9`` choose the numbered path as the
question's training path (decision ``chosen``, db/curation.py) and go to the next question; ``n`` says no path is
good enough (``no-path`` on every path of the question: it trains on nothing from SERT); ``s`` skips; ``p`` goes
back one question; ``backspace`` undoes the last choice, across questions. Choices are decisions like any other:
the app's decision writer writes them in order (or keeps them in the journal), the paths screen's training-set
line counts them, self-training and ``export set`` use them (``db.app_queries.in_training_set``).

Speed: the queue (one grouped read) and the questions around the current one are read in worker threads; a key
renders from that cache, and reads one question (three indexed reads) on the UI thread only when the cache
missed.
"""

from __future__ import annotations

import gc
import threading
import time
from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Header, Static

from db import curation
from db.curation import ORDERS, Candidate, QuestionView, QueueItem, choice_changes, in_review_order, question_state
from db.vocabulary import CHOSEN, FILTER, NO_PATH, SAMPLE
from sert_tui.context import workspace_app
from sert_tui.services.decisions import Change, DecisionWriter

#: Questions read ahead of (and behind) the current one.
PREFETCH = 4
#: Candidates on screen at once, numbered 1-9.
PAGE = 9
UNDO_LEVELS = 1000


def _num(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _choose_binding(n: int) -> Binding:
    return Binding(
        str(n),
        f"choose({n})",
        "Choose 1–9" if n == 1 else f"Choose {n}",
        show=n == 1,
        tooltip=f"choose path {n} as this question's training path (it alone trains); on to the next question",
        id=f"review.choose_{n}",
    )


@dataclass
class UndoEntry:
    question_id: int
    previous: list[Change]


class ReviewScreen(Screen):
    """One question of a sample job at a time; a choice per key press, written at once."""

    HELP_TITLE = "Review (one question at a time)"
    BINDINGS = [
        *(_choose_binding(n) for n in range(1, 10)),
        Binding(
            "n",
            "none",
            "None good",
            tooltip="no path of this question is good enough: it trains on nothing from SERT; on to the next",
            id="review.none",
        ),
        Binding("s", "skip", "Skip", tooltip="leave this question as it is; on to the next", id="review.skip"),
        Binding("p", "previous", "Previous", tooltip="back to the previous question of the queue", id="review.back"),
        Binding(
            "backspace",
            "undo",
            "Undo",
            tooltip="undo the last choice (across questions) and go back to its question",
            id="review.undo",
        ),
        Binding(
            "a",
            "toggle_all",
            "All paths",
            tooltip="show every path of the question, not only the filter survivors (again: survivors)",
            id="review.all",
        ),
        Binding(
            "right_square_bracket",
            "more",
            "Next nine",
            tooltip="the next nine paths of the question (1-9 choose among the nine shown)",
            id="review.next_nine",
        ),
        Binding(
            "left_square_bracket",
            "fewer",
            "Prev nine",
            show=False,
            tooltip="the previous nine paths of the question",
            id="review.prev_nine",
        ),
        Binding(
            "o",
            "cycle_order",
            "Order",
            tooltip="the order of the queue: by question → survivors disagree first → the rule's pick wrong but "
            "another survivor right first",
            id="review.order",
        ),
        Binding("escape", "back", "Back", tooltip="back to the previous screen", id="review.back_screen"),
    ]

    class Loaded(Message):
        def __init__(
            self,
            request: int,
            paths_job: int,
            items: list[QueueItem],
            done: dict[int, tuple[str, int | None]],
            label: str,
            keep: int | None,
        ) -> None:
            super().__init__()
            self.request, self.paths_job, self.items, self.done = request, paths_job, items, done
            self.label, self.keep = label, keep

    class Failed(Message):
        def __init__(self, error: str) -> None:
            super().__init__()
            self.error = error

    class Fetched(Message):
        def __init__(self, views: list[QuestionView]) -> None:
            super().__init__()
            self.views = views

    def __init__(self, job_id: int) -> None:
        super().__init__()
        self.job_id = job_id
        self.paths_job: int | None = None
        self.order = "question"
        self.items: list[QueueItem] = []
        self.position = 0
        self.show_all = False
        self.label = ""
        #: question id -> (chosen, path id) | (no-path, None), as the screen knows it (the workspace + this session)
        self.done: dict[int, tuple[str, int | None]] = {}
        self.cache: dict[int, QuestionView] = {}
        self.local: dict[int, str | None] = {}  # path id -> decision made on this screen (wins over reads)
        self.local_done: dict[int, tuple[str, int | None] | None] = {}  # question id -> its state, likewise
        self.undo_stack: list[UndoEntry] = []
        self.actions: list[float] = []  # when each choice of this session was made (the rate)
        self.loaded = threading.Event()  # set once the queue is on screen (tests, benchmarks)
        self.renders = 0
        self._request = 0
        self._fetching: set[int] = set()
        self.first_shown = 0  # the first candidate shown (numbered 1)
        self._shown_question: int | None = None
        self._body_height = 0  # the candidates' pane: the most lines a question needed so far

    # -- layout --------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="review-status", markup=False)
        yield Static("", id="review-question", markup=False)
        with VerticalScroll(id="review-paths"):
            yield Static("", id="review-body", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"Review · job {self.job_id}"
        self.reload()

    @property
    def writer(self) -> DecisionWriter:
        return workspace_app(self).decision_writer

    # -- reading -------------------------------------------------------------------------------------
    def reload(self) -> None:
        """Re-read the queue (the app's refresh key); the current question stays the current one."""
        self._request += 1
        item = self.current_item()
        self._read_queue(self._request, self.order, item.question_id if item is not None else None)

    @work(thread=True, exit_on_error=False, group="review-queue")
    def _read_queue(self, request: int, order: str, keep: int | None) -> None:
        from db import app_queries as q
        from db import curation

        try:
            with workspace_app(self).db.connect() as conn:
                paths_job = q.paths_job_id(conn, self.job_id)
                info = q.job_info(conn, self.job_id)
                items = curation.queue(conn, paths_job, order)
                done = curation.done_questions(conn, paths_job)
            label = ""
            if info is not None:
                label = f"job {info.id} {info.kind}" + (f" {info.label!r}" if info.label else "")
                if info.dataset:
                    label += f" · {info.dataset}"
                if info.kind not in (SAMPLE, FILTER):
                    label += " (not a sample job: nothing to choose)"
            self.post_message(self.Loaded(request, paths_job, items, done, label, keep))
        except Exception as exc:
            self.post_message(self.Failed(f"{exc.__class__.__name__}: {exc}"))

    def on_review_screen_failed(self, message: Failed) -> None:
        self.notify(f"could not read the workspace: {message.error}", severity="error")

    def on_review_screen_loaded(self, message: Loaded) -> None:
        if message.request != self._request:
            return
        first = self.paths_job is None
        self.paths_job = message.paths_job
        self.items = message.items
        self.label = message.label
        # What this screen decided (and the workspace may not show yet) wins.
        done = dict(message.done)
        for qid, state in self.local_done.items():
            if state is None:
                done.pop(qid, None)
            else:
                done[qid] = state
        self.done = done
        index = {item.question_id: i for i, item in enumerate(self.items)}
        if message.keep is not None and message.keep in index:
            self.position = index[message.keep]
        elif first:  # where the person left off: the first question without a choice
            self.position = next((i for i, it in enumerate(self.items) if it.question_id not in self.done), 0)
        self.position = max(0, min(self.position, len(self.items)))
        self.cache.clear()
        self.show()
        self.loaded.set()
        # What is alive now lives as long as the screen: out of the collector's full passes, which otherwise
        # stop a key press for 0.1-0.3 s every dozen questions (the app thaws it when it ends).
        gc.freeze()

    def _view(self, question_id: int) -> QuestionView | None:
        """A question from the cache, else read now (three indexed reads)."""
        view = self.cache.get(question_id)
        if view is None and self.paths_job is not None:
            from db.curation import question_view

            with workspace_app(self).db.connect() as conn:
                view = question_view(conn, self.paths_job, question_id)
            if view is not None:
                self.cache[question_id] = view
        return view

    def _prefetch(self) -> None:
        """Read the questions around the current one in a worker, a batch at a time: once fewer than half of
        :data:`PREFETCH` questions ahead are read, the next ``2 * PREFETCH``."""
        ahead = range(self.position, min(len(self.items), self.position + PREFETCH // 2 + 1))
        if all(self.items[i].question_id in self.cache for i in ahead):
            return
        wanted = [
            self.items[i].question_id
            for i in range(max(0, self.position - 1), min(len(self.items), self.position + 2 * PREFETCH + 1))
        ]
        missing = [qid for qid in wanted if qid not in self.cache and qid not in self._fetching]
        if missing and self.paths_job is not None:
            self._fetching.update(missing)
            self._fetch(self.paths_job, missing)
        if len(self.cache) > 128:  # keep the neighbourhood only
            keep = set(wanted)
            for qid in [q for q in self.cache if q not in keep][: len(self.cache) - 64]:
                del self.cache[qid]

    @work(thread=True, exit_on_error=False, group="review-fetch")
    def _fetch(self, job: int, question_ids: list[int]) -> None:
        from db.curation import question_view

        views = []
        try:
            with workspace_app(self).db.connect() as conn:
                for qid in question_ids:
                    view = question_view(conn, job, qid)
                    if view is not None:
                        views.append(view)
        finally:
            self.post_message(self.Fetched(views))
            self._fetching.difference_update(question_ids)

    def on_review_screen_fetched(self, message: Fetched) -> None:
        for view in message.views:
            self.cache.setdefault(view.question_id, view)

    # -- state ---------------------------------------------------------------------------------------
    def current_item(self) -> QueueItem | None:
        return self.items[self.position] if 0 <= self.position < len(self.items) else None

    def decision_of(self, path: Candidate) -> str | None:
        return self.local[path.id] if path.id in self.local else path.decision

    def _decisions(self, question_id: int) -> list[tuple[int, str | None]]:
        view = self.cache.get(question_id)
        return [] if view is None else [(p.id, self.decision_of(p)) for p in view.paths]

    def visible(self, view: QuestionView) -> list[Candidate]:
        """The candidates: the filter survivors, or every path (``a``, or a question none survived); the rule's
        pick first, then by rep-2 (the paper's order), then branch, sample."""
        survivors = view.survivors
        paths = view.paths if self.show_all or not survivors else survivors
        return in_review_order(paths)

    def shown(self, view: QuestionView) -> list[Candidate]:
        """The nine candidates on screen, numbered 1-9 (``]`` and ``[`` move by nine)."""
        return self.visible(view)[self.first_shown : self.first_shown + PAGE]

    def trains_on(self, view: QuestionView) -> list[int]:
        """The paths of the question that self-training will use, as this screen knows the decisions."""
        return curation.trains_on([(p.id, self.decision_of(p), p.selected) for p in view.paths])

    def counts(self) -> tuple[int, int]:
        """(questions done, questions left) of the queue."""
        done = sum(1 for item in self.items if item.question_id in self.done)
        return done, len(self.items) - done

    # -- keys ----------------------------------------------------------------------------------------
    def action_choose(self, number: int) -> None:
        item = self.current_item()
        view = self._view(item.question_id) if item is not None else None
        if view is None:
            return
        shown = self.shown(view)
        if not 1 <= number <= len(shown):
            self.notify(f"no path {number} here ({len(shown)} shown)", timeout=2)
            return
        self._record(view, shown[number - 1].id)

    def action_none(self) -> None:
        item = self.current_item()
        view = self._view(item.question_id) if item is not None else None
        if view is None:
            return
        if not view.paths:
            self.notify("this question has no path yet", timeout=2)
            return
        self._record(view, None)

    def _record(self, view: QuestionView, choice: int | None) -> None:
        decisions = [(p.id, self.decision_of(p)) for p in view.paths]
        changes = choice_changes(decisions, choice)
        if changes:
            now = dict(decisions)
            self.undo_stack.append(UndoEntry(view.question_id, [(pid, now[pid]) for pid, _ in changes]))
            del self.undo_stack[:-UNDO_LEVELS]
            self._apply(view.question_id, changes)
        self.actions.append(time.monotonic())
        self.position = min(self.position + 1, len(self.items))
        self.show()

    def _apply(self, question_id: int, changes: list[Change]) -> None:
        self.writer.submit(changes)
        for pid, decision in changes:
            self.local[pid] = decision
        state = question_state(self._decisions(question_id))
        self.local_done[question_id] = state
        if state is None:
            self.done.pop(question_id, None)
        else:
            self.done[question_id] = state

    def action_skip(self) -> None:
        if self.position < len(self.items):
            self.position += 1
            self.show()

    def action_previous(self) -> None:
        if self.position > 0:
            self.position -= 1
            self.show()

    def action_undo(self) -> None:
        if not self.undo_stack:
            self.notify("nothing to undo", timeout=2)
            return
        entry = self.undo_stack.pop()
        if self.actions:
            self.actions.pop()
        if self._view(entry.question_id) is None:
            return
        self._apply(entry.question_id, entry.previous)
        index = next((i for i, it in enumerate(self.items) if it.question_id == entry.question_id), None)
        if index is not None:
            self.position = index
        self.show()

    def action_toggle_all(self) -> None:
        self.show_all = not self.show_all
        self.first_shown = 0
        self.show()

    def action_cycle_order(self) -> None:
        orders = list(ORDERS)
        self.order = orders[(orders.index(self.order) + 1) % len(orders)]
        self.notify(f"queue order: {ORDERS[self.order]}", timeout=3)
        self.reload()

    def action_back(self) -> None:
        self.app.pop_screen()

    # -- drawing -------------------------------------------------------------------------------------
    def action_more(self) -> None:
        item = self.current_item()
        view = self._view(item.question_id) if item is not None else None
        if view is not None and self.first_shown + PAGE < len(self.visible(view)):
            self.first_shown += PAGE
            self.show()

    def action_fewer(self) -> None:
        if self.first_shown > 0:
            self.first_shown = max(0, self.first_shown - PAGE)
            self.show()

    def show(self) -> None:
        item = self.current_item()
        if item is None or item.question_id != self._shown_question:
            self.first_shown = 0  # a new question starts at its first nine
            self._shown_question = item.question_id if item is not None else None
        view = self._view(item.question_id) if item is not None else None
        # fixed heights: no layout pass for these two (only the paths below change the layout)
        self.query_one("#review-status", Static).update(self.status_text(view), layout=False)
        self.query_one("#review-question", Static).update(self.question_text(view), layout=False)
        self._show_paths(self.paths_text(view))
        self.renders += 1
        self._prefetch()

    def _show_paths(self, text: Text) -> None:
        """The candidates, in a pane whose height only grows: a Static that changes height costs a layout pass
        of the screen, half of a key press; so the pane keeps the largest height any question needed so far (an
        estimate from the lines' lengths that errs high) and a new question is a repaint alone."""
        pane = self.query_one("#review-paths", VerticalScroll)
        body = self.query_one("#review-body", Static)
        width = max(10, pane.scrollable_content_region.width - 2)
        needed = sum(1 + (len(line) + 8) // width for line in text.plain.split("\n"))
        if needed > self._body_height:
            self._body_height = needed + 8
            body.styles.height = self._body_height
            body.update(text)
        else:
            body.update(text, layout=False)
        pane.scroll_home(animate=False)

    def rate(self) -> float | None:
        """Choices per minute this session (None before the second one)."""
        if len(self.actions) < 2:
            return None
        span = self.actions[-1] - self.actions[0]
        return 60.0 * (len(self.actions) - 1) / span if span > 0 else None

    def status_text(self, view: QuestionView | None) -> Text:
        done, left = self.counts()
        t = Text()
        t.append(self.label or f"job {self.job_id}", style="bold")
        if self.paths_job is not None and self.paths_job != self.job_id:
            t.append(f" · paths of job {self.paths_job}")
        t.append(f" · {ORDERS[self.order]} (o)")
        t.append("\n")
        if self.items:
            at = min(self.position + 1, len(self.items))
            t.append(f"question {at}/{len(self.items)}", style="bold")
        t.append(f" · {done:,} done · {left:,} left", style="bold green")
        rate = self.rate()
        if rate is not None:
            t.append(f" · {rate:.1f} questions/min")
            if left:
                minutes = left / rate
                eta = f"{minutes:.0f} min" if minutes < 90 else f"{minutes / 60:.1f} h"
                t.append(f" · ETA {eta}")
        return t

    def question_text(self, view: QuestionView | None) -> Text:
        t = Text()
        if view is None:
            if self.items and self.position >= len(self.items):
                t.append("End of the queue. ", style="bold")
                t.append("p goes back, backspace undoes, escape leaves.", style="dim")
            elif not self.loaded.is_set():
                t.append("reading the queue…", style="dim")
            else:
                t.append("no question to review: the job has no paths yet", style="dim")
            return t
        t.append(f"Question #{view.index}  ", style="bold")
        t.append(view.text)
        t.append("\nGold answer: ", style="bold")
        t.append(view.gold, style="bold cyan")
        t.append("   ")
        state = self.done.get(view.question_id)
        if state is None:
            t.append("no choice yet: trains on the rule's pick and what was accepted by hand", style="dim")
        elif state[0] == CHOSEN:
            number = next((i for i, p in enumerate(self.shown(view), 1) if p.id == state[1]), None)
            where = f"path {number}" if number is not None else "a path not on screen"
            t.append(f"chosen: {where} (id {state[1]}) trains alone", style="bold yellow")
        else:
            t.append("no path good enough: trains on nothing", style="bold red")
        ids = self.trains_on(view)
        numbers = {p.id: i for i, p in enumerate(self.shown(view), 1)}
        named = [f"path {numbers[pid]}" if pid in numbers else f"id {pid}" for pid in ids]
        t.append("\nTrains on: ", style="bold")
        t.append(", ".join(named) if named else "nothing", style="bold green" if named else "bold red")
        survivors = len(view.survivors)
        kind = "every path" if self.show_all or not survivors else "the filter survivors"
        total = len(self.visible(view))
        t.append(f"\n{survivors} of {len(view.paths)} paths survived the filters · {kind} (a)", style="dim")
        if total > PAGE:
            last = min(self.first_shown + PAGE, total)
            t.append(f" · {self.first_shown + 1}–{last} of {total} (] next nine, [ previous)", style="bold")
        return t

    def paths_text(self, view: QuestionView | None) -> Text:
        t = Text()
        if view is None:
            return t
        for number, p in enumerate(self.shown(view), 1):
            decision = self.decision_of(p)
            head = f"{number:>2} "
            t.append(head, style="bold reverse" if decision == CHOSEN else "bold")
            if decision == CHOSEN:
                t.append("★ chosen ", style="bold yellow")
            elif decision == NO_PATH:
                t.append("∅ ", style="dim red")
            elif decision:
                t.append(f"[{decision}] ", style="dim")
            if p.selected:
                t.append("rule's pick ", style="yellow")
            if not p.passed:
                t.append("filtered out ", style="dim red")
            t.append("answer ")
            t.append(p.answer if p.answer is not None else "(none)", style="bold")
            if p.correct is not None:
                t.append(" ✓" if p.correct else " ✗", style="green" if p.correct else "bold red")
            t.append(
                f"  conf {_num(p.confidence, '.3f')} · agr {_num(p.agreement, 'd')} · rep-2 {_num(p.rep2, '.3f')}"
                f" · ppl {_num(p.perplexity, '.1f')}",
                style="dim",
            )
            if p.gold_logp is not None:
                t.append(f" · gold logp {p.gold_logp:.2f}", style="dim")
            if p.duplicate_of is not None:
                t.append(f" · duplicate of {p.duplicate_of}", style="yellow")
            t.append(f"  (id {p.id})\n", style="dim")
            t.append("    " + " ".join(p.text.split()) + "\n\n")
        if not view.paths:
            t.append("(no paths yet)", style="dim")
        return t
