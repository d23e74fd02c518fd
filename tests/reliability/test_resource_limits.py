"""Resource limits: a sampling batch that does not fit in memory backs off to a smaller batch instead of
crashing, and the job says so in its log.

The limit is simulated with the real setting ``sampling.max_batch_memory_mb`` (a cap on the decode batch's KV
cache): a batch above it raises ``torch.OutOfMemoryError`` exactly where an allocation the device cannot make
would, and goes through the same back-off as a real one. The real CPU allocator's error is checked to be
recognised too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.reliability import stats
from tests.reliability.conftest import write_config
from tests.reliability.harness import cli, copy_workspace, query

pytestmark = [pytest.mark.model]
QUESTIONS = [
    "Is the sun a star?",
    "Can a fish climb a tree without help from anyone at all?",
    "Would a penguin survive in the Sahara?",
    "Is water wet?",
]


def limit_between(model, tokenizer, dtype, fits_rows: int, refused_rows: int, max_new: int, texts: list[str]) -> float:
    """A limit in MiB that lets ``fits_rows`` sequences through and refuses ``refused_rows``."""
    from engine.prompts import sampling_prompt
    from engine.sampling.cache import kv_cache_bytes

    max_len = max(len(tokenizer(sampling_prompt(t)).input_ids) for t in texts) + max_new
    low = kv_cache_bytes(model.config, fits_rows, max_len, dtype)
    high = kv_cache_bytes(model.config, refused_rows, max_len, dtype)
    assert low < high
    return (low + high) / 2 / 2**20


def sample_all(student, limit_mb: float | None, batch_size: int) -> tuple[dict[int, list], list[str], object]:
    from engine.config import SamplingConfig
    from engine.sampling.backends import make_sampler_from_model

    model, tokenizer = student
    cfg = SamplingConfig(
        first_tokens=2, per_branch=2, max_new_tokens=6, batch_size=batch_size, seed=3, max_batch_memory_mb=limit_mb
    )
    log: list[str] = []
    # one fixed thread: the back-off run and the reference then do the same arithmetic on the same batches (one
    # question's 4 rows); a thread count tuned by timing could differ between them and round differently
    sampler = make_sampler_from_model(model, tokenizer, cfg, log=log.append, threads=1)
    got: dict[int, list] = {}

    def on_done(key: int, paths: list) -> None:
        assert key not in got, f"question {key} reported twice"
        got[key] = [(p.branch, p.sample, p.text, p.tokens) for p in paths]

    sampler.sample(list(enumerate(QUESTIONS)), on_done)
    return got, log, sampler


def test_a_batch_over_the_limit_halves_until_it_fits(student) -> None:
    model, tokenizer = student
    dtype = next(model.parameters()).dtype
    # 16 sequences (4 questions x 4 paths) asked for; only 4 (one question) fit: 16 -> 8 -> 4
    limit = limit_between(model, tokenizer, dtype, 4, 8, 6, QUESTIONS)
    got, log, sampler = sample_all(student, limit, batch_size=16)
    stats.faults["out of memory (simulated limit)"] += 2
    backoffs = [line for line in log if "out of memory" in line]
    assert len(backoffs) == 2, log
    assert "backing off to 8 sequences" in backoffs[0] and "backing off to 4 sequences" in backoffs[1]
    assert sampler.question_capacity == 1
    assert sorted(got) == [0, 1, 2, 3] and all(len(paths) == 4 for paths in got.values())
    # each question has its own random stream: the same paths as a run that used 4 sequences from the start
    reference, ref_log, _ = sample_all(student, None, batch_size=4)
    assert not [line for line in ref_log if "out of memory" in line]
    assert got == reference


def test_one_question_that_does_not_fit_is_a_clear_error(student) -> None:
    from db.errors import UserError

    model, tokenizer = student
    limit = limit_between(model, tokenizer, next(model.parameters()).dtype, 1, 4, 6, QUESTIONS)
    with pytest.raises(UserError) as info:
        sample_all(student, limit, batch_size=16)
    stats.faults["out of memory (simulated limit)"] += 1
    message = str(info.value)
    assert "the 4 paths of one question do not fit in memory" in message and "\n" not in message


def test_the_real_allocator_errors_count_as_out_of_memory() -> None:
    import torch

    from engine.sampling.hf import is_out_of_memory

    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 60, dtype=torch.uint8)  # the CPU allocator refuses an exabyte
    stats.faults["out of memory (real allocator)"] += 1
    assert is_out_of_memory(info.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))  # only allocation errors


def test_the_sample_job_backs_off_and_says_so_in_its_log(sqa_template, tmp_path: Path) -> None:
    """The real command: the job completes with every path, and its log (job_events) names the back-off."""
    import torch
    from transformers import AutoConfig, AutoTokenizer

    from engine.models import prepare_model
    from engine.prompts import sampling_prompt
    from engine.sampling.cache import kv_cache_bytes

    db = copy_workspace(sqa_template, tmp_path / "w.db")
    texts = [
        r[0]
        for r in query(
            db,
            "SELECT q.text FROM questions q JOIN datasets d ON d.id = q.dataset_id "
            "WHERE d.name = 'sqa' AND q.split = 'train' ORDER BY q.position LIMIT 3",
        )
    ]
    model_dir = prepare_model("default")
    config, tokenizer = AutoConfig.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    max_len = max(len(tokenizer(sampling_prompt(t)).input_ids) for t in texts) + 8
    limit = (kv_cache_bytes(config, 4, max_len, torch.float32) + kv_cache_bytes(config, 8, max_len, torch.float32)) / 2
    cfg = write_config(
        tmp_path / "c.toml",
        sampling={
            "batch_size": 12,
            "dtype": "float32",
            "max_batch_memory_mb": round(limit / 2**20, 3),
            "batch_invariant": False,  # the back-off is the default mode's (batch-invariant decodes one question)
        },
    )
    result = cli(db, "run", str(cfg), "--stage", "sample", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    stats.faults["out of memory (simulated limit, sample job)"] += 1
    job = query(db, "SELECT id, status FROM jobs WHERE kind = 'sample'")
    assert len(job) == 1 and job[0][1] == "completed"
    events = [r[0] for r in query(db, "SELECT message FROM job_events WHERE job_id = ? ORDER BY id", (job[0][0],))]
    backoffs = [e for e in events if "out of memory" in e and "backing off" in e]
    assert backoffs, events
    assert "backing off to 4 sequences" in backoffs[-1]
    assert query(db, "SELECT COUNT(*) FROM paths WHERE job_id = ?", (job[0][0],))[0][0] == 3 * 4
    assert "backing off" in result.stderr  # also on the console of a headless run
