"""Pick the CPU thread count of the decode loop by measuring it, again and again.

On a machine whose cores are shared with other busy processes, PyTorch's OpenMP threads wait for each other at
every operator; with more threads than free cores a decode step can get several times slower than with one
thread (measured 3-4x on a 2-core machine with other jobs running), while on an idle machine all cores are
~1.8x faster. So the sampler times its steps: every ``period`` steps it tries each candidate thread count for
``trial`` steps and keeps the fastest (seconds per sequence-step) until the next trial round. Trials cost a
few percent at worst. Disabled on GPUs and when a thread count is given explicitly.
"""

from __future__ import annotations

import statistics


class ThreadTuner:
    def __init__(self, max_threads: int, enabled: bool = True, trial: int = 2, period: int = 40) -> None:
        self.enabled = enabled and max_threads > 1
        self.options = [max_threads, 1] if self.enabled else [max_threads]
        self.trial = trial
        self.period = period
        self.current = max_threads
        self._best = max_threads
        self._step = 0
        self._samples: dict[int, list[float]] = {}
        self.history: list[tuple[int, int]] = []  # (step, chosen threads) after each trial round

    def threads_for_step(self) -> int:
        """The thread count to use for the next step."""
        if not self.enabled:
            return self.current
        phase = self._step % self.period
        exploring = phase < self.trial * len(self.options)
        self.current = self.options[phase // self.trial] if exploring else self._best
        return self.current

    def record(self, seconds: float, rows: int) -> None:
        """Report the wall time of the step just run with ``threads_for_step()`` threads for ``rows`` rows."""
        if not self.enabled:
            return
        phase = self._step % self.period
        n_trial = self.trial * len(self.options)
        if phase < n_trial:
            if phase == 0:
                self._samples = {}
            self._samples.setdefault(self.current, []).append(seconds / max(rows, 1))
            if phase == n_trial - 1:
                self._best = min(self._samples, key=lambda t: statistics.median(self._samples[t]))
                self.history.append((self._step, self._best))
        self._step += 1
