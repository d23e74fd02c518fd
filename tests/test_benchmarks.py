"""The benchmarks run end to end at a tiny size and print the JSON their notes quote (the figures themselves
come from full runs on a quiet machine, not from here)."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.model, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


def bench(script: str, *args: str, timeout: float = 600) -> dict:
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def positive(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    """A tiny student with the bundled student's tokenizer (tests/conftest.py): these tests check what the
    benchmarks report, not how fast or how well the real student does."""
    from tests.conftest import save_tiny_student

    return save_tiny_student(tmp_path_factory.mktemp("student"))


def test_sampling_benchmark_reports_the_three_ways_and_the_ratios(tiny_student: Path) -> None:
    """On a tiny student (the figures' keys and relations are the check, not the real student's speed)."""
    args = ["--questions", "1", "--tokens", "4", "--model", str(tiny_student), "--matmul-size", "256"]
    result = bench("sampling.py", *args)
    assert result["model"] == str(tiny_student) and set(result["matmul_gflops"]) == {"float32", "bfloat16"}
    for key in ("naive_tok_s", "strong_tok_s", "engine_tok_s", "ratio_naive", "ratio_strong", "roofline_share"):
        assert positive(result[key]), (key, result[key])
    assert 0 < result["peak_mem_gb"] < 4
    assert result["ratio_naive"] == pytest.approx(result["engine_tok_s"] / result["naive_tok_s"])
    # the three ways sample the same branches of the same question (25 paths), so they count alike
    assert {m: r["tokens"] >= 25 for m, r in result["runs"].items()} == {"naive": True, "strong": True, "engine": True}


def test_evaluation_benchmark_reports_the_engine_the_baseline_and_the_agreement(tiny_student: Path) -> None:
    """On a saved checkpoint (a tiny student, so that the test does not train one)."""
    result = bench(
        "evaluation.py",
        "--questions",
        "3",
        "--tokens",
        "6",
        "--metrics-questions",
        "3",
        "--checkpoint",
        str(tiny_student),
        "--base",
        str(tiny_student),
    )
    for key in ("engine_q_s", "baseline_q_s", "ratio", "roofline_share"):
        assert positive(result[key]), (key, result[key])
    assert 0 <= result["agreement"] <= 1 and result["runs"]["baseline"]["dtype"] == "float32"
    assert result["roofline_dtype"] == result["engine_dtype"] == result["runs"]["engine"]["dtype"]
    assert "eval_dtype" in result["engine_dtype_reason"]
    # the LM head from bf16 candidates where bf16 is fast, measured against the plain fp32 head in the same run
    approx = "head_fallback_share" in result["runs"]["engine"]
    assert (result["roofline_head_dtype"] == "bfloat16") is approx
    assert ("engine_fp32_head" in result["runs"]) is approx and (not approx or positive(result["ratio_plain_head"]))
    # the bf16 comparison runs where bf16 is the faster dtype (it is what decides evaluation's dtype)
    check = result["metrics_check"]
    assert check is None or (check["questions"] == 3 and check["finetune_erased_share"] == 0.0)  # nothing trained


def test_pipeline_benchmark_times_every_stage_of_run_all(tiny_student: Path) -> None:
    loose = ["--set", "filters.min_tokens=1", "--set", "filters.max_rep2=1.0", "--set", "filters.min_perplexity=0.0"]
    loose += ["--set", f'student.model="{tiny_student}"']
    result = bench("pipeline.py", "--train-limit", "2", "--test-limit", "2", "--epochs", "1", "--tokens", "8", *loose)
    assert result["all_completed"] and positive(result["total_seconds"])
    kinds = {"sample", "filter", "self-train", "teacher", "distill", "finetune", "eval"}
    assert set(result["stage_seconds"]) == kinds
    assert sum(j["kind"] == "eval" for j in result["jobs"]) == 5
    assert all(0 <= s <= result["total_seconds"] for s in result["stage_seconds"].values())


def test_training_benchmark_reports_both_loops_and_their_losses(tiny_student: Path) -> None:
    result = bench("training.py", "--samples", "8", "--heldout", "4", "--batch", "4", "--model", str(tiny_student))
    for key in ("baseline_tok_s", "engine_tok_s", "ratio", "baseline_loss", "engine_loss"):
        assert positive(result[key]), (key, result[key])
    assert result["steps"] == 2 and result["heldout_samples"] == 4
    assert positive(result["baseline_heldout_loss"]) and positive(result["engine_heldout_loss"])
    # the roofline is the matmul rate of the dtype the engine computes in
    assert result["roofline_dtype"] == ("bfloat16" if result["engine_bf16"] else "float32")
    assert positive(result["matmul_gflops"]) and positive(result["engine_roofline_share"])
    assert result["roofline_reason"].startswith(
        "the engine trains under bf16 autocast" if result["engine_bf16"] else "the engine trains in fp32"
    )


def test_training_roofline_dtype_follows_the_engines_precision() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_training", ROOT / "benchmarks" / "training.py")
    bench_training = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_training)
    assert bench_training.roofline_dtype(True, "on") == (
        "bfloat16",
        "the engine trains under bf16 autocast (--bf16 on): its matmuls run in bf16",
    )
    assert bench_training.roofline_dtype(True, "auto")[0] == "bfloat16"
    assert "measured GEMM" in bench_training.roofline_dtype(True, "auto")[1]
    assert bench_training.roofline_dtype(False, "off") == (
        "float32",
        "the engine trains in fp32 without autocast (--bf16 off)",
    )
    assert "measured GEMM" in bench_training.roofline_dtype(False, "auto")[1]
    # the probe measures the dtype it is given
    assert positive(bench_training.matmul_gflops("bfloat16", seconds=0.05))


def test_sweep_grid_and_its_best_recipe_per_mode() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_sweep", ROOT / "benchmarks" / "sweep.py")
    bench_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_sweep)
    cells = bench_sweep.grid([1e-4, 3e-4], [1e-3], [1.0, 3.0])
    assert [(c["lora"], c["lr"], c["epochs"]) for c in cells] == [
        (False, 1e-4, 1.0),
        (False, 1e-4, 3.0),
        (False, 3e-4, 1.0),
        (False, 3e-4, 3.0),
        (True, 1e-3, 1.0),
        (True, 1e-3, 3.0),
    ]
    rows = [
        {"dataset": "a", "lora": False, "lr": 1e-4, "epochs": 3.0, "acc": 0.4},
        {"dataset": "b", "lora": False, "lr": 1e-4, "epochs": 3.0, "acc": 0.9},  # mean 0.65
        {"dataset": "a", "lora": False, "lr": 3e-4, "epochs": 3.0, "acc": 0.7},
        {"dataset": "b", "lora": False, "lr": 3e-4, "epochs": 3.0, "acc": 0.5},  # mean 0.60
        {"dataset": "a", "lora": False, "lr": 3e-4, "epochs": 1.0, "acc": 0.65},
        {"dataset": "b", "lora": False, "lr": 3e-4, "epochs": 1.0, "acc": 0.65},  # ties 0.65 with fewer epochs
        {"dataset": "a", "lora": True, "lr": 1e-3, "epochs": 1.0, "status": "failed"},  # no accuracy: not a candidate
    ]
    best = bench_sweep.best_of(rows, lora=False)
    assert (best["epochs"], best["lr"], best["datasets"]) == (1.0, 3e-4, 2)
    assert best["mean_acc"] == pytest.approx(0.65)
    assert bench_sweep.best_of(rows, lora=True) is None


def test_benchmarks_share_the_toml_value_rule_and_the_import_of_a_set_with_rationales(engine, monkeypatch) -> None:
    """``--set`` values are read by one rule (engine.config.toml_value: a TOML literal, else the bare text),
    the filter explorer's and the pipeline benchmark's alike; a set and its recorded rationales are imported
    by one function, the sweep's and the pipeline benchmark's alike."""
    import importlib.util

    from sqlalchemy import func
    from sqlmodel import select

    from db.models import Path as PathRow
    from db.models import Question
    from db.session import session_scope
    from engine.config import toml_value
    from engine.filtering.explore import parse_sets
    from engine.teacher import recorded

    assert [toml_value(v) for v in ("3", " 0.5", "true", '"x"', "[1, 2]", "rep2")] == [
        3,
        0.5,
        True,
        "x",
        [1, 2],
        "rep2",
    ]
    assert parse_sets(["filters.min_tokens=1", "filters.select=random"]) == {"min_tokens": 1, "select": "random"}
    pipeline = (ROOT / "benchmarks" / "pipeline.py").read_text()
    assert "toml_value(raw)" in pipeline and "tomllib" not in pipeline
    assert 'import_task_with_rationales(database, "sqa", DATA, "strategy_qa")' in pipeline

    spec = importlib.util.spec_from_file_location("bench_sweep", ROOT / "benchmarks" / "sweep.py")
    bench_sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_sweep)
    calls = []
    real = recorded.import_task_with_rationales
    monkeypatch.setattr(recorded, "import_task_with_rationales", lambda *a, **k: calls.append(a) or real(*a, **k))
    bench_sweep.ensure_dataset(engine, "coin_flip")
    bench_sweep.ensure_dataset(engine, "coin_flip")  # there already: nothing more
    assert [c[1:] for c in calls] == [("coin_flip", bench_sweep.DATA)] * 2
    with session_scope(engine) as s:
        assert s.exec(select(func.count(Question.id))).one() == 500
        assert s.exec(select(func.count(PathRow.id))).one() == 492 + 8 * 5  # every recorded rationale


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_startup_benchmark_times_the_app_and_the_baseline_in_tmux() -> None:
    result = bench("startup.py", "--runs", "1")
    medians = result["median_seconds"]
    assert set(medians) == {"baseline", "first_frame", "data_shown"} and all(positive(v) for v in medians.values())
    assert medians["first_frame"] <= medians["data_shown"]
    assert result["first_frame_over_baseline_s"] == pytest.approx(medians["first_frame"] - medians["baseline"])
