"""Figures the reliability suite collects while it runs; printed at the end of the session (conftest)."""

from __future__ import annotations

from collections import Counter, defaultdict

#: kills that hit a live job process, per stage
kills: Counter[str] = Counter()
#: injected faults (HTTP faults, damaged files, simulated out-of-memory), per kind
faults: Counter[str] = Counter()
#: generated (hypothesis) inputs run, per property
generated: Counter[str] = Counter()
#: rows that should be there and are not (paths, decisions, metrics, items), per check; must stay 0
lost: Counter[str] = Counter()
#: decisions a person made on paths between kills, per stage (all must survive)
decisions: Counter[str] = Counter()
#: wall seconds per test
seconds: dict[str, float] = defaultdict(float)


def summary_lines() -> list[str]:
    lines = []
    if kills:
        lines.append("kills survived per stage: " + ", ".join(f"{k} {n}" for k, n in sorted(kills.items())))
    if faults:
        lines.append(
            f"fault cases tried: {sum(faults.values())} ("
            + ", ".join(f"{k} {n}" for k, n in sorted(faults.items()))
            + ")"
        )
    if generated:
        lines.append(
            f"generated bad inputs tried: {sum(generated.values())} ("
            + ", ".join(f"{k} {n}" for k, n in sorted(generated.items()))
            + ")"
        )
    if decisions:
        lines.append("decisions made between kills: " + ", ".join(f"{k} {n}" for k, n in sorted(decisions.items())))
    if kills or faults or generated or lost:
        lines.append(f"rows lost: {sum(lost.values())}" + (f" ({dict(lost)})" if lost else ""))
    return lines


def snapshot() -> dict[str, dict[str, float]]:
    """The figures as plain dicts: what a pytest-xdist worker sends to the controller at its end."""
    return {name: dict(globals()[name]) for name in ("kills", "faults", "generated", "lost", "decisions", "seconds")}


def merge(data: dict[str, dict[str, float]]) -> None:
    """Add a worker's :func:`snapshot` to this process's figures (the controller prints the sum)."""
    for name, values in data.items():
        target = globals()[name]
        for key, value in values.items():
            target[key] += value
