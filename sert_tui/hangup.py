"""Leave when the terminal goes away.

A closed terminal window, a dropped SSH connection or a killed tmux session hangs up the app's terminal. The
shell that started the app would forward SIGHUP, but nothing does when the app runs under ``make run`` or
another parent that is not a shell; Textual's input thread then reads end-of-file in a loop (a whole core)
while its output queue, with no terminal to write to, blocks the event loop for good. So a small thread looks
at the terminal every second; once none of the app's standard streams is a terminal any more, it waits for
the decisions already made to be written -- or, when the workspace stays busy, kept in its journal of
pending decisions (``db.decision_journal``), which the next start applies -- and ends the process. Job
processes the app started run in their own sessions and go on.
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
        for the writes) kept where the next start finds it."""
        ...


#: What has writes in flight that must land before the process ends (the app's decision writers).
PENDING_WRITES: weakref.WeakSet[Drains] = weakref.WeakSet()


def drain_pending(timeout: float = 10.0) -> None:
    """Make every pending write durable (see :class:`Drains`); a writer that fails does not stop the others."""
    for writer in list(PENDING_WRITES):
        try:
            writer.drain(timeout)
        except Exception:  # nobody is left to tell: the terminal is gone
            pass


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
