"""Security: owner-only files, API keys nowhere on disk, exports that never overwrite silently, and no shell
command strings anywhere in the project.
"""

from __future__ import annotations

import argparse
import ast
import os
import secrets
import stat
import subprocess
import time
from pathlib import Path

from tests.reliability import stats
from tests.reliability.conftest import write_config
from tests.reliability.harness import ROOT, SERT, child_env, cli, copy_workspace, log_tail, query, table_counts

# -- owner-only files ------------------------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_workspace_created_owner_only_even_with_an_open_umask(tmp_path: Path) -> None:
    db = tmp_path / "new" / "workspace.db"
    data = tmp_path / "q.jsonl"
    data.write_text('{"question": "Is it?", "answer": "yes"}\n', encoding="utf-8")
    result = subprocess.run(
        [str(SERT), "--db", str(db), "data", "import", "jsonl", "--name", "d", "--file", str(data)],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
        umask=0,  # a careless umask must not make the workspace world-readable
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert mode(db) == 0o600


def test_wal_and_shm_files_follow_the_workspace_mode(tmp_path: Path) -> None:
    """SQLite's side files hold recent writes: they get the workspace file's owner-only mode."""
    from sqlalchemy import text

    from db.session import open_workspace

    old = os.umask(0)
    try:
        engine = open_workspace(tmp_path / "w.db")
        with engine.begin() as conn:  # hold the file open with a write in the WAL
            conn.execute(text("INSERT INTO models (name, source, local_path, created_at) VALUES ('m', 'x', '', '')"))
            wal, shm = Path(f"{tmp_path / 'w.db'}-wal"), Path(f"{tmp_path / 'w.db'}-shm")
            assert wal.exists() and shm.exists()
            assert mode(wal) == 0o600 and mode(shm) == 0o600
        engine.dispose()
    finally:
        os.umask(old)


def test_files_beside_the_workspace_are_owner_only(tmp_path: Path) -> None:
    """What the app writes next to the workspace -- job logs, the configs of its forms, the default job's
    config -- is as private as the workspace, whatever the umask."""
    from engine.pipeline.processes import Launcher, ensure_default_config, write_form_config

    old = os.umask(0)
    try:
        workspace = tmp_path / "w.db"
        default = ensure_default_config(workspace)
        form = write_form_config(workspace, {"name": "mine", "data": {"dataset": "none"}})
        launch = Launcher(workspace).start(form, ["sample"])
        launch.process.wait(timeout=120)
    finally:
        os.umask(old)
    assert launch.process.returncode == 2, log_tail(launch.log)  # no dataset 'none': refused, logged
    assert mode(default) == 0o600
    assert mode(form.parent) == 0o700 and mode(form) == 0o600
    assert mode(launch.log.parent) == 0o700 and mode(launch.log) == 0o600
    assert "no dataset named 'none'" in launch.log_text()


def test_a_new_file_never_replaces_one_created_while_it_was_written(tmp_path: Path) -> None:
    """The existence check of an export is repeated when the file takes its name: a file that appeared in
    the meantime (another process) is kept, and nothing half-written is left behind."""
    import pytest

    from db.errors import UserError
    from engine.files import new_file

    out = tmp_path / "export.jsonl"
    with pytest.raises(UserError, match="already exists"):
        with new_file(out) as handle:
            handle.write("ours\n")
            out.write_text("theirs\n")  # someone else's file, created after the first check
    assert out.read_text() == "theirs\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.jsonl"]  # no temporary file left
    with new_file(out, force=True) as handle:  # asked: replaced in one step
        handle.write("ours\n")
    assert out.read_text() == "ours\n" and mode(out) == 0o600
    with pytest.raises(RuntimeError):
        with new_file(tmp_path / "broken.jsonl") as handle:
            handle.write("half")
            raise RuntimeError("the export failed half-way")
    assert not (tmp_path / "broken.jsonl").exists()


def test_checkpoint_directories_are_owner_only(tmp_path: Path) -> None:
    """``checkpoints/``, ``job-N/`` and every ``step-N/`` are 0700 whatever the umask (a tiny real model)."""
    from db.session import open_workspace
    from engine.jobs import create_job
    from engine.models import load_tokenizer
    from engine.training.checkpoints import write_checkpoint
    from tests.conftest import tiny_llama

    old = os.umask(0)
    try:
        engine = open_workspace(tmp_path / "w.db")
        job = create_job(engine, "self-train", {})
        tokenizer = load_tokenizer("default")
        model = tiny_llama(len(tokenizer), layers=1)
        write_checkpoint(engine, job.id, 1, model, tokenizer, {"test": True}, state=None)
        engine.dispose()
    finally:
        os.umask(old)
    root = tmp_path / "checkpoints"
    dirs = [root, root / f"job-{job.id}", root / f"job-{job.id}" / "step-1"]
    assert all(d.is_dir() for d in dirs)
    assert [oct(mode(d)) for d in dirs] == [oct(0o700)] * 3


# -- API keys -------------------------------------------------------------------------------------------------


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()]


def test_api_key_appears_nowhere_on_disk(teacher_server, sqa_template, tmp_path: Path, monkeypatch) -> None:
    """A teacher run with a unique key (through a proxy that insists on it), a run with a refused key, the
    exports and listings: neither key is in the workspace, its -wal/-shm, the job logs, the exports or
    checkpoints -- anything under the workspace's folder -- nor in the commands' output."""
    from engine.pipeline.processes import Launcher, logs_dir
    from tests.teacher_server import FaultProxy

    base_url, model = teacher_server
    key = "sk-reliability-" + secrets.token_hex(20)
    wrong = "sk-refused-" + secrets.token_hex(20)
    folder = tmp_path / "ws"
    folder.mkdir()
    db = copy_workspace(sqa_template, folder / "workspace.db")
    outputs: list[str] = []
    with FaultProxy(base_url, require_key=key) as proxy:
        teacher = {"base_url": proxy.base_url, "model": model, "api_key_env": "SERT_REL_KEY", "max_tokens": 8}
        teacher |= {"concurrency": 2, "retry_base_delay": 0.05, "timeout": 120}
        good_cfg = write_config(folder / "teacher.toml", data={"train_limit": 2}, teacher=teacher)
        bad_cfg = write_config(folder / "teacher-bad.toml", data={"train_limit": 3}, teacher=teacher)

        # the app's way: a job process started by the launcher, logging beside the workspace
        monkeypatch.setenv("SERT_REL_KEY", key)
        launcher = Launcher(db)
        launch = launcher.start(good_cfg, ["teacher"])
        launch.process.wait(timeout=600)
        assert launch.process.returncode == 0, launch.log_text()[-3000:]
        assert proxy.forwarded == 2, "the key was not used (the proxy lets only that key through)"

        # the headless way with a key the server refuses: one clear line, no key in it
        refused = cli(db, "run", str(bad_cfg), "--stage", "teacher", env=child_env(SERT_REL_KEY=wrong))
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 2 and "401" in proxy.actions
        stats.faults["teacher: refused key"] += 1

    job_id = query(db, "SELECT id FROM jobs WHERE kind='teacher' AND status='completed'")[0][0]
    for args in (
        ["teacher", "batch-export", "--config", str(bad_cfg), "--out", str(folder / "batch.jsonl")],
        ["export", "paths", "--job", str(job_id), "--out", str(folder / "teacher-paths.jsonl")],
        ["paths", "list", "--job", str(job_id), "--json"],
        ["jobs", "list", "--json"],
        ["teacher", "jobs", "--json"],
    ):
        result = cli(db, *args, env=child_env(SERT_REL_KEY=key))
        assert result.returncode == 0, result.stderr
        (folder / f"out-{args[0]}-{args[1]}.txt").write_text(result.stdout + result.stderr)
        outputs += [result.stdout, result.stderr]

    files = files_under(folder)
    names = {p.name for p in files}
    assert {"workspace.db", "batch.jsonl", "teacher-paths.jsonl"} <= names
    assert any(p.parent == logs_dir(db) for p in files), "the launcher's job log is missing"
    for path in files:
        blob = path.read_bytes()
        for secret in (key, wrong):
            assert secret.encode() not in blob, f"an API key is in {path}"
    for text in outputs:
        assert key not in text and wrong not in text
    assert os.environ["SERT_REL_KEY"] == key  # (the key was there all along, only never written)


# -- exports never overwrite silently -------------------------------------------------------------------------

OUTPUT_OPTIONS = ("--out", "--output", "--export", "--to")


def _subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _subcommands(sub, (*prefix, name))
    yield prefix, parser


def test_every_command_that_writes_a_file_has_force() -> None:
    from sert_tui.cli import build_parser

    writers = []
    for path, parser in _subcommands(build_parser()):
        if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            continue  # a command group: its subcommands are checked
        options = {s for a in parser._actions for s in a.option_strings}
        if options & set(OUTPUT_OPTIONS) or (path and path[-1] in ("init",)) or any("export" in p for p in path):
            writers.append(" ".join(path))
            assert "--force" in options, f"`sert-tui {' '.join(path)}` writes a file but has no --force"
    assert {"teacher batch-export", "config init", "export set", "export paths"} <= set(writers)


def test_batch_export_refuses_an_existing_file_unless_forced(sqa_template, tmp_path: Path) -> None:
    db = copy_workspace(sqa_template, tmp_path / "w.db")
    cfg = write_config(
        tmp_path / "c.toml", data={"train_limit": 2}, teacher={"base_url": "http://127.0.0.1:9/v1", "model": "m"}
    )
    out = tmp_path / "requests.jsonl"
    out.write_text("my precious earlier export\n")
    before = table_counts(db)
    refused = cli(db, "teacher", "batch-export", "--config", str(cfg), "--out", str(out))
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [f"error: {out}: already exists (use --force to overwrite)"]
    assert out.read_text() == "my precious earlier export\n"
    assert table_counts(db) == before  # refused before anything was written (no job created)
    forced = cli(db, "teacher", "batch-export", "--config", str(cfg), "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert out.read_text().count('"custom_id"') == 2
    assert mode(out) == 0o600


def test_config_init_refuses_an_existing_file_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "experiment.toml"
    out.write_text("# mine\n")
    refused = cli(tmp_path / "w.db", "config", "init", str(out))
    assert refused.returncode == 2 and "already exists" in refused.stderr
    assert out.read_text() == "# mine\n"
    assert cli(tmp_path / "w.db", "config", "init", str(out), "--force").returncode == 0
    assert "[sampling]" in out.read_text()
    fresh = tmp_path / "fresh.toml"
    assert cli(tmp_path / "w.db", "config", "init", str(fresh)).returncode == 0 and "[sampling]" in fresh.read_text()


# -- no shell strings -------------------------------------------------------------------------------------------

SUBPROCESS_FUNCS = {"run", "Popen", "call", "check_call", "check_output"}
SHELL_FUNCS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
    ("commands", "getoutput"),
}
SKIP_DIRS = {".venv", ".git", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", "node_modules"}


def _dotted(node: ast.AST) -> tuple[str, ...]:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return tuple(reversed(parts))


def _is_stringy(node: ast.AST) -> bool:
    """A command given as one string (literal, f-string, concatenation or %-format), not an argv list."""
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return _is_stringy(node.left) or _is_stringy(node.right)
    return False


SHELLS = {"sh", "bash", "zsh", "dash", "/bin/sh", "/bin/bash", "/usr/bin/env"}


def _shell_c(args: list[ast.AST]) -> bool:
    """An argv that hands a command line to a shell: ``["sh", "-c", ...]`` (as a list or as os.exec* arguments)."""
    items = args[0].elts if len(args) == 1 and isinstance(args[0], ast.List | ast.Tuple) else args
    consts = [a.value for a in items if isinstance(a, ast.Constant) and isinstance(a.value, str)]
    return bool(consts) and any(c in SHELLS or c.endswith("/sh") for c in consts[:2]) and "-c" in consts


def shell_violations(source: str, name: str) -> tuple[list[str], int]:
    """Problems in one file and the number of process-starting calls in it."""
    tree = ast.parse(source, filename=name)
    problems: list[str] = []
    calls = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in ("os", "subprocess", "asyncio", "commands"):
            for alias in node.names:
                if (node.module, alias.name) in SHELL_FUNCS:
                    problems.append(f"{name}:{node.lineno}: imports {node.module}.{alias.name}")
        if not isinstance(node, ast.Call):
            continue
        dotted = _dotted(node.func)
        where = f"{name}:{node.lineno}"
        if dotted[-2:] in SHELL_FUNCS:
            problems.append(f"{where}: {'.'.join(dotted)}() runs a shell")
        for kw in node.keywords:
            if kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and kw.value.value is False):
                problems.append(f"{where}: shell={ast.unparse(kw.value)}")
        is_process = dotted[-1:] and dotted[-1] in SUBPROCESS_FUNCS and (len(dotted) == 1 or dotted[-2] == "subprocess")
        is_exec = len(dotted) == 2 and dotted[0] == "os" and dotted[1].startswith(("exec", "spawn"))
        if dotted and dotted[-1] in ("create_subprocess_exec",) or is_process or is_exec:
            calls += 1
            if node.args and _is_stringy(node.args[0]) and not is_exec:
                problems.append(f"{where}: command given as a string: {ast.unparse(node.args[0])[:60]}")
            if _shell_c(list(node.args)):
                problems.append(f"{where}: a shell runs a command line: {ast.unparse(node)[:60]}")
    return problems, calls


def project_files() -> list[Path]:
    out = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if any(part in SKIP_DIRS or part.startswith(".venv") or part.endswith(".egg-info") for part in rel.parts):
            continue
        out.append(path)
    return out


def test_the_scanner_catches_shell_strings() -> None:
    planted = (
        "import os, subprocess\nfrom os import system\n"
        "subprocess.run(f'ls {user}', shell=True)\nos.system('rm ' + name)\n"
        "subprocess.Popen('tar -xf ' + archive)\nsubprocess.check_output(cmd, shell=flag)\n"
        "subprocess.getoutput('date')\n"
        "subprocess.run(['sh', '-c', 'echo ' + name])\nos.execlp('bash', 'bash', '-c', line)\n"
    )
    problems, calls = shell_violations(planted, "planted.py")
    assert len(problems) == 9 and calls == 5, problems
    clean, calls = shell_violations("import subprocess\nsubprocess.run(['ls', path], check=True)\n", "ok.py")
    assert clean == [] and calls == 1


def test_no_shell_strings_in_the_project() -> None:
    files = project_files()
    assert len(files) > 50
    problems: list[str] = []
    calls = 0
    for path in files:
        found, n = shell_violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
        problems += found
        calls += n
    print(f"scanned {len(files)} files, {calls} process-starting calls, all argv lists without a shell")
    assert problems == []
    assert calls >= 5  # the launcher, the teacher server, the tests' job processes...


def test_a_hostile_config_path_is_passed_as_one_argument(tmp_path: Path) -> None:
    """The launcher hands paths to the job process as argv items: shell syntax in a name stays a name."""
    from engine.pipeline.processes import Launcher

    token = secrets.token_hex(4)
    name = f"pwned-{token}"  # a shell would create this file in the job process's folder (the project root)
    folder = tmp_path / f"a; touch {name}; $(touch {name}) `touch {name}`"
    folder.mkdir()
    config = folder / "c'$(id)\".toml"
    config.write_text('[data]\ndataset = "none"\n', encoding="utf-8")
    launcher = Launcher(folder / "w.db")
    launch = launcher.start(config, ["sample"])
    launch.process.wait(timeout=120)
    time.sleep(0.2)
    assert not (ROOT / name).exists() and not list(tmp_path.rglob(name))
    assert launch.process.returncode == 2, log_tail(launch.log)
    assert "no dataset named 'none'" in launch.log_text()
