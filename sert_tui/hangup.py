"""Leave when the terminal goes away.

A closed terminal window, a dropped SSH connection or a killed tmux session hangs up the app's terminal. The
shell that started the app would forward SIGHUP, but nothing does when the app runs under ``make run`` or
another parent that is not a shell; Textual's input thread then reads end-of-file in a loop (a whole core)
while its output queue, with no terminal to write to, blocks the event loop for good. So a small thread looks
at the terminal every second; once none of the app's standard streams is a terminal any more, it waits for
the decisions already made to be written -- or, when the workspace stays busy, kept in its journal of
pending decisions (``db.decision_journal``), which the next start applies -- and ends the process. A drain
that fails is not hidden: the writer gets one more try at keeping what is left (:meth:`Drains.rescue`), and
what happened -- kept, or the decisions themselves when even that failed -- goes to standard error (file
descriptor 2: a log when the app ran under a parent that keeps one). Job processes the app started run in
their own sessions and go on.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Protocol

HANGUP_EXIT_CODE = 129  # 128 + SIGHUP, as a shell reports a process ended by a hang-up


class Drains(Protocol):
    def drain(self, timeout: float) -> object:
        """Return once every write handed in is durable: written, or (after ``timeout`` seconds of waiting
        for the writes) kept where the next start finds it; raise when they could not be kept."""
        ...

    def rescue(self, error: BaseException) -> str:
        """After a failed drain (``error``): keep what is still unsaved once more, and return the sentence
        that says what became of it (where it was kept, or the unsaved writes themselves)."""
        ...


#: What has writes in flight that must land before the process ends (the app's decision writers).
PENDING_WRITES: weakref.WeakSet[Drains] = weakref.WeakSet()


def say(text: str) -> None:
    """One line on standard error (the descriptor itself: the app's ``sys.stderr`` may be captured); a
    standard error that is gone too (the hung-up terminal) is let be."""
    try:
        os.write(2, f"sert-tui: {text}\n".encode())
    except OSError:
        pass


def drain_pending(timeout: float = 10.0) -> int:
    """Make every pending write durable (see :class:`Drains`); a writer that fails does not stop the others,
    and its failure, and what became of its writes, is said on standard error. Returns how many failed."""
    failed = 0
    for writer in list(PENDING_WRITES):
        try:
            writer.drain(timeout)
        except Exception as exc:
            failed += 1
            try:
                text = writer.rescue(exc)
            except Exception as again:
                text = f"pending writes could not be saved ({exc}; then {again})"
            say(text)
    return failed


def terminal_fds() -> list[int]:
    """The standard streams that are a terminal now."""
    return [fd for fd in (0, 1, 2) if os.isatty(fd)]


def hung_up(fds: Sequence[int]) -> bool:
    """Whether every one of ``fds`` (terminals when the app started) stopped being one: a hung-up terminal
    answers the terminal ioctl with EIO, so ``isatty`` turns false."""
    return bool(fds) and not any(os.isatty(fd) for fd in fds)


def watch(
    before_exit: Callable[[], None] = drain_pending,
    fds: Sequence[int] | None = None,
    interval: float = 1.0,
    exit: Callable[[int], None] = os._exit,
) -> threading.Thread | None:
    """Start the watching thread (none when no standard stream is a terminal: tests, pipes)."""
    fds = list(terminal_fds() if fds is None else fds)
    if not fds:
        return None

    def run() -> None:
        while not hung_up(fds):
            time.sleep(interval)
        try:
            before_exit()
        finally:
            exit(HANGUP_EXIT_CODE)

    thread = threading.Thread(target=run, name="terminal-hangup-watch", daemon=True)
    thread.start()
    return thread
