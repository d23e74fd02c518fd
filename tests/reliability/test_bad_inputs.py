"""Generated bad inputs (hypothesis) for the importers and the config loader, through the real command
(``sert_tui.cli.main``, in process so that hundreds of cases stay fast): every case either imports cleanly
or ends with exit code 2 and one short ``error: ...`` line -- never a traceback or another exception type --
and a refused case leaves every table of the workspace with the rows it had (counts and contents).

The mutation properties start from a valid file and break exactly one thing, so each case must be refused;
the free-form properties throw arbitrary JSON/TOML at the commands, where importing is allowed too.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import re
import sqlite3
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine import answers
from tests.reliability import stats
from tests.reliability.harness import table_state

MAX_MESSAGE = 400  # characters: a message that echoes a huge input back is not a clear message
_names = itertools.count()


def per_kind(heavy: bool, kinds: tuple[str, ...], default: int, heavy_n: int) -> settings:
    """Settings for one mutation kind: the total budget spread evenly over the kinds."""
    n = max(2, (heavy_n if heavy else default) // len(kinds))
    return examples(heavy, n, n)


def examples(heavy: bool, default: int = 60, heavy_n: int = 400) -> settings:
    return settings(
        max_examples=heavy_n if heavy else default,
        deadline=None,
        database=None,
        derandomize=not heavy,  # the default suite is repeatable; the heavy one explores
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A workspace that already holds a dataset (so "unchanged" means something)."""
    db = tmp_path_factory.mktemp("bad-inputs") / "w.db"
    f = db.parent / "seed.jsonl"
    f.write_text('{"question": "Is the sky blue?", "answer": "yes"}\n{"question": "2+2?", "answer": "4"}\n')
    code, _out, err = run_cli(db, ["data", "import", "jsonl", "--name", "seed", "--file", str(f)])
    assert code == 0, err
    return db


def run_cli(db: Path, args: list[str]) -> tuple[int, str, str]:
    from sert_tui.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--db", str(db), *args])
    return code, out.getvalue(), err.getvalue()


def assert_refused(db: Path, args: list[str], before: dict[str, tuple[int, str]]) -> str:
    code, _out, err = run_cli(db, args)
    assert code == 2, f"accepted a bad input (exit {code}): {err[-500:]}"
    return check_error(err, db, before)


PROGRESS = re.compile(r"(examples|it)/s\]|\d+%\|")  # progress bars of `datasets` (a local build prints them)


def check_error(err: str, db: Path, before: dict[str, tuple[int, str]]) -> str:
    lines = [line for line in re.split(r"[\r\n]", err) if line.strip() and not PROGRESS.search(line)]
    assert len(lines) == 1, f"not one line: {err[:1000]!r}"
    assert lines[0].startswith("error: ") and len(lines[0]) <= MAX_MESSAGE + 200, lines[0][:1000]
    assert table_state(db) == before, "a refused input changed the workspace"
    return lines[0]


def write(path: Path, content: bytes | str | Any) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8", errors="surrogatepass")
    else:
        path.write_text(json.dumps(content), encoding="utf-8")
    return path


# -- strategies ------------------------------------------------------------------------------------------------
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
non_strings = st.none() | st.booleans() | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=5), scalars)
huge = st.integers(min_value=5_000, max_value=200_000).map(lambda n: "x" * n)
unicode_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
not_json = st.text(max_size=60).filter(lambda t: not _parses(t))
invalid_utf8 = st.binary(min_size=1, max_size=40).map(lambda b: b"\xff\xfe" + b + b"\xc3\x28")


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _yes_no(value: str) -> bool:
    try:
        answers.normalize_gold(value, "yes_no")
    except ValueError:
        return False
    return True


@st.composite
def valid_reasoning_teacher(draw) -> tuple[list[dict], dict[str, list[int]]]:
    n = draw(st.integers(min_value=2, max_value=5))
    rows = [
        {"question": draw(unicode_text.filter(str.strip)), "answer": draw(st.sampled_from(["Yes", "No"]))}
        for _ in range(n)
    ]
    cut = draw(st.integers(min_value=1, max_value=n))
    order = draw(st.permutations(range(n)))
    return rows, {"train": list(order[:cut]), "test": list(order[cut:])}


RT_KINDS = (
    "dataset-malformed",
    "dataset-empty",
    "dataset-not-utf8",
    "dataset-not-list",
    "row-not-object",
    "row-missing-field",
    "row-wrong-type",
    "row-empty-text",
    "answer-not-yes-no",
    "answer-huge",
    "question-lone-surrogate",
    "split-malformed",
    "split-empty-file",
    "split-not-object",
    "split-empty-object",
    "split-indices-not-list",
    "index-not-integer",
    "index-huge-string",
    "index-huge-integer",
    "index-missing-from-dataset",
    "index-in-two-splits",
)


@st.composite
def broken_reasoning_teacher(draw, what: str) -> tuple[str, Any, Any]:
    """A valid dataset + split pair with exactly one thing broken: (what, dataset content, split content)."""
    rows, split = draw(valid_reasoning_teacher())
    i = draw(st.integers(min_value=0, max_value=len(rows) - 1))
    dataset: Any = rows
    if what == "dataset-malformed":
        text = json.dumps(rows)
        dataset = draw(not_json | st.integers(min_value=1, max_value=len(text) - 1).map(lambda k: text[:k]))
    elif what == "dataset-empty":
        dataset = b""
    elif what == "dataset-not-utf8":
        dataset = draw(invalid_utf8)
    elif what == "dataset-not-list":
        dataset = draw(scalars | st.dictionaries(st.text(max_size=5), scalars, min_size=1))
    elif what == "row-not-object":
        rows[i] = draw(scalars | st.lists(scalars, max_size=3))
    elif what == "row-missing-field":
        del rows[i][draw(st.sampled_from(["question", "answer"]))]
    elif what == "row-wrong-type":
        rows[i][draw(st.sampled_from(["question", "answer"]))] = draw(non_strings)
    elif what == "row-empty-text":
        rows[i]["question"] = draw(st.sampled_from(["", " ", "\n\t ", "\u3000"]))
    elif what == "answer-not-yes-no":
        rows[i]["answer"] = draw(unicode_text.filter(lambda t: not _yes_no(t)))
    elif what == "answer-huge":
        rows[i]["answer"] = draw(huge)
    elif what == "question-lone-surrogate":
        # JSON may spell a lone UTF-16 surrogate (\ud800); it is not text that can be stored
        dataset = json.dumps(rows).replace(json.dumps(rows[i]["question"]), '"half a pair: \\ud800"', 1)
    elif what == "split-malformed":
        split = draw(not_json)
    elif what == "split-empty-file":
        split = b""
    elif what == "split-not-object":
        split = draw(scalars | st.lists(scalars, max_size=3))
    elif what == "split-empty-object":
        split = {}
    elif what == "split-indices-not-list":
        split["train"] = draw(scalars | st.dictionaries(st.text(max_size=3), scalars))
    elif what == "index-not-integer":
        split["train"][0] = draw(
            st.text(max_size=5) | st.floats(allow_nan=False, allow_infinity=False) | st.none() | st.booleans()
        )
    elif what == "index-huge-string":
        split["train"][0] = draw(huge)
    elif what == "index-huge-integer":  # more digits than Python converts by default (4,300)
        split = json.dumps(split).replace("[", "[" + "9" * draw(st.integers(4_301, 20_000)) + ", ", 1)
    elif what == "index-missing-from-dataset":
        split["train"][0] = draw(
            st.integers(min_value=len(rows), max_value=2**80) | st.integers(min_value=-(2**80), max_value=-1)
        )
    elif what == "index-in-two-splits":
        split.setdefault("test", []).append(split["train"][0])
    return what, dataset, split


JSONL_KINDS = (
    "malformed-line",
    "line-not-object",
    "missing-field",
    "wrong-type",
    "empty-text",
    "empty-file",
    "blank-lines-only",
    "not-utf8",
    "choices-not-strings",
    "split-not-a-name",
    "answer-not-yes-no",
    "huge-answer-not-yes-no",
    "lone-surrogate",
    "huge-integer",
)


@st.composite
def broken_jsonl(draw, what: str) -> tuple[str, bytes | str, list[str]]:
    """Valid JSON Lines with one thing broken: (what, file content, extra command arguments)."""
    n = draw(st.integers(min_value=1, max_value=4))
    rows: list[Any] = [{"question": draw(unicode_text.filter(str.strip)), "answer": "yes"} for _ in range(n)]
    i = draw(st.integers(min_value=0, max_value=n - 1))
    extra: list[str] = []
    lines = None
    if what == "malformed-line":
        lines = [json.dumps(r) for r in rows]
        lines[i] = draw(not_json.filter(str.strip))
    elif what == "line-not-object":
        rows[i] = draw(scalars.filter(lambda v: v is not None) | st.lists(scalars, max_size=3))
    elif what == "missing-field":
        del rows[i][draw(st.sampled_from(["question", "answer"]))]
    elif what == "wrong-type":
        rows[i][draw(st.sampled_from(["question", "answer"]))] = draw(non_strings)
    elif what == "empty-text":
        rows[i]["question"] = draw(st.sampled_from(["", "  ", "\n"]))
    elif what == "empty-file":
        return what, b"", extra
    elif what == "blank-lines-only":
        return what, draw(st.sampled_from(["\n", "\n\n  \n", " \t\n"])), extra
    elif what == "not-utf8":
        return what, draw(invalid_utf8), extra
    elif what == "choices-not-strings":
        rows[i]["choices"] = draw(
            st.lists(non_strings | st.integers(), min_size=1, max_size=3) | st.text(max_size=5) | st.integers()
        )
    elif what == "split-not-a-name":
        rows[i]["split"] = draw(non_strings | st.integers() | st.just(""))
    elif what in ("answer-not-yes-no", "huge-answer-not-yes-no"):
        rows[i]["answer"] = draw(huge if what.startswith("huge") else unicode_text.filter(lambda t: not _yes_no(t)))
        extra = ["--answer-type", "yes_no"]
    elif what == "lone-surrogate":
        lines = [json.dumps(r) for r in rows]
        lines[i] = '{"question": "half a pair \\udc80 here", "answer": "yes"}'
    elif what == "huge-integer":
        lines = [json.dumps(r) for r in rows]
        lines[i] = lines[i][:-1] + ', "id": ' + "7" * draw(st.integers(4_301, 20_000)) + "}"
    if lines is None:
        lines = [json.dumps(r) for r in rows]
    return what, "\n".join(lines) + "\n", extra


# -- reasoning-teacher ------------------------------------------------------------------------------------------
def test_reasoning_teacher_importer_refuses_each_broken_file(workspace: Path, tmp_path: Path, heavy: bool) -> None:
    for kind in RT_KINDS:

        @per_kind(heavy, RT_KINDS, default=84, heavy_n=1050)
        @given(broken_reasoning_teacher(kind))
        def prop(case: tuple[str, Any, Any]) -> None:
            _what, dataset, split = case
            stats.generated["reasoning-teacher (broken)"] += 1
            d = write(tmp_path / "strategy_qa.json", dataset)
            s = write(tmp_path / "split.json", split)
            before = table_state(workspace)
            name = f"rt{next(_names)}"
            args = ["data", "import", "reasoning-teacher", "--name", name, "--dataset", str(d), "--split", str(s)]
            assert_refused(workspace, args, before)

        prop()


def test_reasoning_teacher_importer_on_arbitrary_json(workspace: Path, tmp_path: Path, heavy: bool) -> None:
    @examples(heavy, default=40, heavy_n=500)
    @given(json_values, json_values)
    def prop(dataset: Any, split: Any) -> None:
        stats.generated["reasoning-teacher (arbitrary JSON)"] += 1
        d = write(tmp_path / "strategy_qa.json", dataset)
        s = write(tmp_path / "split.json", split)
        before = table_state(workspace)
        name = f"rt{next(_names)}"
        code, _out, err = run_cli(
            workspace, ["data", "import", "reasoning-teacher", "--name", name, "--dataset", str(d), "--split", str(s)]
        )
        assert code in (0, 2), err[-2000:]
        if code == 2:
            check_error(err, workspace, before)

    prop()


# -- JSON Lines -------------------------------------------------------------------------------------------------
def test_jsonl_importer_refuses_each_broken_file(workspace: Path, tmp_path: Path, heavy: bool) -> None:
    for kind in JSONL_KINDS:

        @per_kind(heavy, JSONL_KINDS, default=56, heavy_n=700)
        @given(broken_jsonl(kind))
        def prop(case: tuple[str, bytes | str, list[str]]) -> None:
            _what, content, extra = case
            stats.generated["jsonl (broken)"] += 1
            f = write(tmp_path / "data.jsonl", content)
            before = table_state(workspace)
            args = ["data", "import", "jsonl", "--name", f"j{next(_names)}", "--file", str(f), *extra]
            assert_refused(workspace, args, before)

        prop()


def test_jsonl_importer_on_arbitrary_lines(workspace: Path, tmp_path: Path, heavy: bool) -> None:
    line = (
        json_values.map(json.dumps)
        | st.text(max_size=40)
        | st.dictionaries(
            st.sampled_from(["question", "answer", "choices", "split", "other"]), json_values, max_size=5
        ).map(json.dumps)
    )

    @examples(heavy, default=40, heavy_n=500)
    @given(st.lists(line, max_size=5))
    def prop(lines: list[str]) -> None:
        stats.generated["jsonl (arbitrary lines)"] += 1
        f = write(tmp_path / "data.jsonl", "\n".join(lines))
        before = table_state(workspace)
        code, _out, err = run_cli(
            workspace, ["data", "import", "jsonl", "--name", f"j{next(_names)}", "--file", str(f)]
        )
        assert code in (0, 2), err[-2000:]
        if code == 2:
            check_error(err, workspace, before)

    prop()


# -- Hugging Face local directories ------------------------------------------------------------------------------
HF_KINDS = (
    "no-question-column",
    "question-wrong-type",
    "empty-question",
    "unknown-split",
    "empty-dir",
    "malformed-jsonl",
    "empty-jsonl",
    "malformed-csv",
    "broken-dataset-dict",
    "broken-state-json",
)


@st.composite
def broken_hf_dir(draw, what: str) -> tuple[str, dict[str, bytes | str], list[str]]:
    """A local dataset directory (data files, or a save_to_disk layout) with one thing broken."""
    good = [{"question": draw(unicode_text.filter(str.strip)), "answer": "yes"} for _ in range(2)]
    lines = "\n".join(json.dumps(r) for r in good) + "\n"
    files: dict[str, bytes | str] = {"train.jsonl": lines}
    args: list[str] = []
    if what == "no-question-column":
        files = {"train.jsonl": "\n".join(json.dumps({"q": r["question"], "answer": "yes"}) for r in good)}
    elif what == "question-wrong-type":
        bad = draw(st.lists(st.integers(), min_size=1, max_size=3) | st.dictionaries(st.just("k"), st.integers()))
        files = {"train.jsonl": "\n".join(json.dumps({"question": bad, "answer": "yes"}) for _ in good)}
    elif what == "empty-question":
        files = {"train.jsonl": json.dumps({"question": "  ", "answer": "yes"}) + "\n"}
    elif what == "unknown-split":
        args = ["--split", draw(st.sampled_from(["validation", "tset", "trian"]))]
    elif what == "empty-dir":
        files = {}
    elif what == "malformed-jsonl":
        files = {"train.jsonl": lines + draw(not_json.filter(lambda t: t.strip() and "\n" not in t)) + "\n"}
    elif what == "empty-jsonl":
        files = {"train.jsonl": ""}
    elif what == "malformed-csv":
        files = {"train.csv": 'question,answer\n"unterminated,yes\nx,y,z,w\n'}
    elif what == "broken-dataset-dict":
        files = {"dataset_dict.json": draw(not_json | st.just('{"splits": ["train"]}'))}
    elif what == "broken-state-json":
        files = {"state.json": draw(not_json | st.just("{}")), "dataset_info.json": "{}"}
    return what, files, args


def test_hf_local_directory_importer_refuses_each_broken_dir(workspace: Path, tmp_path: Path, heavy: bool) -> None:
    counter = itertools.count()
    for kind in HF_KINDS:

        @per_kind(heavy, HF_KINDS, default=20, heavy_n=150)  # each case builds a real `datasets` dataset
        @given(broken_hf_dir(kind))
        def prop(case: tuple[str, dict[str, bytes | str], list[str]]) -> None:
            _what, files, args = case
            stats.generated["hf local dir (broken)"] += 1
            folder = tmp_path / f"hf{next(counter)}"
            folder.mkdir()
            for name, content in files.items():
                write(folder / name, content)
            before = table_state(workspace)
            command = ["data", "import", "hf", "--name", f"h{next(_names)}", "--path", str(folder), *args]
            assert_refused(workspace, command, before)

        prop()


# -- the experiment config ---------------------------------------------------------------------------------------
def _fields() -> list[tuple[str, str, Any]]:
    """(section, key, pydantic field) of every config key."""
    from engine.config import ExperimentConfig, Section

    out = []
    for section in ExperimentConfig.model_fields:
        default = ExperimentConfig().__getattribute__(section)
        if isinstance(default, Section):
            out += [(section, key, sub) for key, sub in type(default).model_fields.items()]
    return out


def _bad_value(annotation: Any) -> st.SearchStrategy:
    """TOML values of another type than the key's, including those a lax parser would coerce (``"10"`` or
    ``25.0`` or ``true`` for an integer, ``1`` or ``"yes"`` for a boolean, ``"0.5"`` for a float): the config
    is strict, so every one is refused."""
    text = repr(annotation)
    tables = st.dictionaries(st.text(alphabet="abcxyz_", min_size=1, max_size=4), st.integers(), min_size=1, max_size=2)
    arrays = st.lists(st.integers(), min_size=1, max_size=3)
    digits = st.integers(0, 10**6).map(str)
    if "bool" in text and "int" not in text:
        coercible = st.sampled_from(["yes", "true", "1", "off"]) | st.integers(0, 1)
        return st.sampled_from(["maybe", "ja", "2"]) | arrays | tables | st.floats(0.1, 0.9) | coercible
    if "int" in text:
        return (
            st.text(min_size=1, max_size=10)
            | arrays
            | tables
            | huge
            | st.floats(0.1, 0.9).map(lambda f: f + 3)
            | digits
            | st.integers(1, 100).map(float)
            | st.booleans()
        )
    if "float" in text:
        return st.text(min_size=1, max_size=10) | arrays | tables | huge | digits | st.booleans()
    if "Literal" in text:
        return st.text(max_size=10).filter(lambda t: t not in text) | st.integers() | arrays
    return st.integers() | arrays | tables | st.booleans()  # str fields


def _toml_value(value: Any) -> str:
    """A TOML value on one line (tables inline)."""
    import tomli_w

    if isinstance(value, dict):
        return (
            "{ " + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {_toml_value(v)}" for k, v in value.items()) + " }"
        )
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


FIELDS = None


CONFIG_KINDS = ("wrong-type", "unknown-key", "unknown-section", "malformed", "not-utf8", "out-of-range")


@st.composite
def broken_config(draw, what: str) -> tuple[str, str, str]:
    """(what, TOML text, the key path the message must name)."""
    global FIELDS
    FIELDS = FIELDS or _fields()
    section, key, field = draw(st.sampled_from(FIELDS))
    if what == "wrong-type":
        value = draw(_bad_value(field.annotation))
        return what, f"[{section}]\n{key} = {_toml_value(value)}\n", f"{section}.{key}"
    if what == "out-of-range":
        numeric = [
            (s, k, f)
            for s, k, f in FIELDS
            if f.metadata and any(hasattr(m, "ge") or hasattr(m, "gt") for m in f.metadata)
        ]
        section, key, field = draw(st.sampled_from(numeric))
        low = min(
            getattr(m, "ge", None) if getattr(m, "ge", None) is not None else getattr(m, "gt", 0)
            for m in field.metadata
            if hasattr(m, "ge") or hasattr(m, "gt")
        )
        value = (
            draw(st.integers(min_value=-(2**40), max_value=int(low) - 1))
            if "int" in repr(field.annotation)
            else -draw(st.floats(0.5, 1e6))
        )
        return what, f"[{section}]\n{key} = {_toml_value(value)}\n", f"{section}.{key}"
    if what == "unknown-key":
        bad = draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=12).filter(
                lambda k: k not in {f[1] for f in FIELDS}
            )
        )
        return what, f"[{section}]\n{bad} = 1\n", f"{section}.{bad}"
    if what == "unknown-section":
        bad = draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=10).filter(
                lambda k: k not in {f[0] for f in FIELDS} | {"name"}
            )
        )
        return what, f"[{bad}]\nx = 1\n", bad
    if what == "malformed":
        good = f"[{section}]\n{key} = 1\n"
        cut = draw(st.text(max_size=30).filter(lambda t: not _toml_ok(t)))
        return what, draw(st.sampled_from([cut, good + cut, good.replace("=", "", 1), good + f"[{section}]\n"])), ""
    return what, "", ""  # not-utf8: written as bytes by the test


def _toml_ok(text: str) -> bool:
    try:
        tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return False
    return True


def test_config_loader_refuses_each_broken_config(tmp_path: Path, heavy: bool) -> None:
    from db.errors import UserError
    from engine.config import load_config

    for kind in CONFIG_KINDS:

        @per_kind(heavy, CONFIG_KINDS, default=120, heavy_n=900)
        @given(broken_config(kind), invalid_utf8)
        def prop(case: tuple[str, str, str], raw: bytes) -> None:
            what, text, key = case
            stats.generated["config (broken)"] += 1
            path = tmp_path / "c.toml"
            write(path, raw if what == "not-utf8" else text)
            with pytest.raises(UserError) as info:
                load_config(path)
            message = str(info.value)
            assert "\n" not in message and len(message) <= MAX_MESSAGE, message[:1000]
            assert key in message, (key, message)

        prop()


def test_config_loader_on_arbitrary_toml(tmp_path: Path, heavy: bool) -> None:
    """Arbitrary tables, some of them real keys: a config, or one short UserError line -- nothing else."""
    from db.errors import UserError
    from engine.config import ExperimentConfig, load_config

    fields = _fields()
    known = st.sampled_from(fields).flatmap(
        lambda f: st.tuples(
            st.just(f[0]), st.just(f[1]), scalars.filter(lambda v: v is not None) | st.lists(st.integers(), max_size=2)
        )
    )

    @examples(heavy, default=80, heavy_n=600)
    @given(
        st.lists(known, max_size=6), st.dictionaries(unicode_text, scalars.filter(lambda v: v is not None), max_size=2)
    )
    def prop(entries: list[tuple[str, str, Any]], top: dict[str, Any]) -> None:
        import tomli_w

        stats.generated["config (arbitrary TOML)"] += 1
        data: dict[str, Any] = {k: v for k, v in top.items() if k not in {f[0] for f in fields}}
        for section, key, value in entries:
            data.setdefault(section, {})[key] = value
        path = tmp_path / "c.toml"
        path.write_text(tomli_w.dumps(data), encoding="utf-8")
        try:
            cfg = load_config(path)
        except UserError as exc:
            assert "\n" not in str(exc) and len(str(exc)) <= MAX_MESSAGE, str(exc)[:1000]
        else:
            assert isinstance(cfg, ExperimentConfig)

    prop()


def test_run_with_a_broken_config_touches_nothing(workspace: Path, tmp_path: Path) -> None:
    """Through ``run``: the config is refused before any job row is written."""
    cases = {  # text -> what the message must say
        '[sampling]\ntop_k = "ten"\n': "sampling.top_k: ",
        '[sampling]\ntop_k = "10"\n': "sampling.top_k: Input should be a valid integer",  # strict: no coercion
        "[sampling]\ntop_kk = 10\n": "sampling.top_kk: unknown key",
        "[sampling\ntop_k = 10\n": "invalid TOML",
        f'[sampling]\nmax_new_tokens = "{"9" * 50_000}x"\n': "sampling.max_new_tokens: ",
        "": "data.dataset is empty",
    }
    for n, (text, expected) in enumerate(cases.items()):
        stats.generated["run with a broken config (fixed cases)"] += 1
        cfg = write(tmp_path / f"c{n}.toml", text)
        before = table_state(workspace)
        line = assert_refused(workspace, ["run", str(cfg), "--stage", "sample"], before)
        assert expected in line, line
    assert sqlite3.connect(str(workspace)).execute("SELECT COUNT(*) FROM jobs").fetchone()[0] == 0
