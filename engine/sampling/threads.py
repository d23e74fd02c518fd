"""Pick the CPU thread count of the decode loop by measuring it, again and again.

On a machine whose cores are shared with other busy processes, PyTorch's OpenMP threads wait for each other at
every operator; with more threads than free cores a decode step can get several times slower than with one
thread (measured 3-4x on a 2-core machine with other jobs running), while on an idle machine all cores are
~1.8x faster. So the sampler times its steps (seconds per sequence-step): it starts with all threads, or
with one when the load average already fills the cores, and now and then tries the other candidate (``trial``
steps the first time, one step later), switching when that is faster than the median of the current choice's
recent steps. While the choice holds, trials get rarer (the period doubles up to ``max_period``), so they cost
a few percent at most. Disabled on GPUs and when a thread count is given.
"""

from __future__ import annotations

import os
import statistics
from collections import deque


def machine_busy(cores: int, own: float = 0.0) -> bool:
    """Whether other processes already keep about ``cores`` cores busy: the 1-minute load average minus ``own``
    (this process's running threads) is at least ``cores - 0.5``."""
    try:
        return os.getloadavg()[0] - own >= cores - 0.5
    except (AttributeError, OSError):
        return False


class ThreadTuner:
    def __init__(
        self,
        max_threads: int,
        enabled: bool = True,
        trial: int = 2,
        period: int = 16,
        max_period: int = 256,
        first_trial: int = 3,
        start: int | None = None,
        skip_busy: bool = True,
    ) -> None:
        self.enabled = enabled and max_threads > 1
        self.options = [max_threads, 1] if self.enabled else [max_threads]
        self.trial = trial
        self.base_period = period
        self.period = period
        self.max_period = max_period
        if start is None:
            start = 1 if self.enabled and machine_busy(max_threads) else max_threads
        self.best = start if start in self.options else max_threads
        self.current = self.best
        self.skip_busy = skip_busy
        self._step = 0
        self._next_trial = first_trial
        self._recent: deque[float] = deque(maxlen=8)  # seconds per row of the best choice
        self._trial_samples: list[float] = []
        self._trying: int | None = None
        self.history: list[tuple[int, int]] = []  # (step, choice) after each trial

    def threads_for_step(self) -> int:
        """The thread count to use for the next step."""
        if self.enabled and self._trying is None and self._step >= self._next_trial and self._recent:
            other = next(t for t in self.options if t != self.best)
            if other > self.best and self.skip_busy and machine_busy(self.options[0], own=self.best):
                # more threads on a machine the load average says is full: a trial would cost several steps'
                # worth of time and lose; look again later
                self.period = min(self.period * 2, self.max_period)
                self._next_trial = self._step + self.period
            else:
                self._trying = other
                self._trial_samples = []
        self.current = self._trying if self._trying is not None else self.best
        return self.current

    def record(self, seconds: float, rows: int) -> None:
        """Report the wall time of the step just run with ``threads_for_step()`` threads for ``rows`` rows."""
        per_row = seconds / max(rows, 1)
        step = self._step
        self._step += 1
        if not self.enabled:
            return
        if self._trying is None:
            if step > 0:  # the first step also pays one-off allocations
                self._recent.append(per_row)
            return
        self._trial_samples.append(per_row)
        if len(self._trial_samples) < (self.trial if not self.history else 1):
            return
        if statistics.median(self._trial_samples) < statistics.median(self._recent):
            self.best = self._trying
            self._recent = deque(self._trial_samples, maxlen=self._recent.maxlen)
            self.period = self.base_period
        else:
            self.period = min(self.period * 2, self.max_period)
        self.history.append((step, self.best))
        self._trying = None
        self._next_trial = self._step + self.period
