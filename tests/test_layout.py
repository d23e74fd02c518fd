"""The layout holds: no import circle between modules, and the facts named in db/vocabulary.py are not spelled
again elsewhere. (The layers themselves are import-linter contracts in pyproject.toml, run by `make lint`.)"""

from __future__ import annotations

import re
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def _cycles(graph, modules: set[str]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v) & modules:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def test_no_import_circles() -> None:
    graph = grimp.build_graph("sert_tui", "engine", "db", include_external_packages=False, cache_dir=None)
    # a package's __init__ importing its own submodules is not a circle of responsibilities
    modules = {m for m in graph.modules if not m.endswith(".__main__")}
    cycles = [c for c in _cycles(graph, modules) if not _package_init_only(c)]
    assert cycles == [], f"import circles: {cycles}"


#: The steps of the method (DESIGN.md section 1), each a package under engine/.
STEPS = ("sampling", "filtering", "training", "teacher", "evaluation")


def test_no_two_steps_import_each_other() -> None:
    """A later step may use an earlier one (training reads the filter job), never both ways: what two steps
    share lives below them (engine.answers: the answer spec; engine.repetition: rep-2)."""
    graph = grimp.build_graph("engine", include_external_packages=False, cache_dir=None)

    def imports(a: str, b: str) -> set[str]:
        found = graph.find_matching_direct_imports(import_expression=f"engine.{a}.** -> engine.{b}.**")
        return {f"{i['importer']} -> {i['imported']}" for i in found}

    mutual = [
        (sorted(imports(a, b)), sorted(imports(b, a)))
        for i, a in enumerate(STEPS)
        for b in STEPS[i + 1 :]
        if imports(a, b) and imports(b, a)
    ]
    assert mutual == [], f"steps that import each other: {mutual}"


def _package_init_only(component: list[str]) -> bool:
    """A package and its own submodule importing each other only through the package's __init__ re-exports."""
    return len(component) == 2 and component[1].startswith(component[0] + ".")


def test_vocabulary_is_spelled_once() -> None:
    """The tuples of kinds and rules exist only in db/vocabulary.py."""
    patterns = [
        r'\(\s*"self-train",\s*"distill",\s*"finetune"\s*\)',
        r'\(\s*"pattern",\s*"length",\s*"repetition",\s*"perplexity"\s*\)',
        r'\(\s*"sample",\s*"filter",\s*"teacher"\s*\)',
        r'"zero-shot",\s*"Finetune",\s*"SERT"',
        r'\(\s*"sample",\s*"filter",\s*"self-train"',
    ]
    hits = []
    for path in (ROOT / d for d in ("engine", "db", "sert_tui")):
        for f in path.rglob("*.py"):
            if f.name == "vocabulary.py":
                continue
            text = f.read_text(encoding="utf-8")
            hits += [f"{f.relative_to(ROOT)}: {p}" for p in patterns if re.search(p, text)]
    assert hits == []


def test_one_training_set_rule_counted_and_built_alike(engine) -> None:
    """The paths screen's count of the training set and the SERT set training builds agree, whatever the mix of
    selections and decisions (both follow db.app_queries.in_training_set)."""
    import random

    from sqlmodel import select

    from db.app_queries import path_counts
    from db.models import Path as PathRow
    from db.paths_repo import set_decision
    from db.session import session_scope
    from engine.training.datasets import training_paths
    from tests.test_app_helpers import make_dataset, make_filter_job, make_sample_job

    dataset = make_dataset(engine)
    job = make_sample_job(engine, dataset, n_questions=3, per_question=25)
    filt = make_filter_job(engine, dataset, job)
    rng = random.Random(7)
    with session_scope(engine) as s:
        ids = s.exec(select(PathRow.id).where(PathRow.job_id == job)).all()
        for pid in ids:
            set_decision(s, pid, rng.choice([None, None, "accepted", "rejected", "ignored"]))
    with session_scope(engine) as s:
        built = {p.id for p, _q in training_paths(s, job, filt)}
    with engine.connect() as conn:
        counted = path_counts(conn, job).training_set  # the display copy on the rows
        own = path_counts(conn, job, verdicts_job=filt)  # the filter job's own rows
    assert counted == own.training_set == own.selected_kept + own.accepted_extra == len(built) > 0
