"""Shared fixtures: a fresh workspace file, the real shared data, the real bundled student."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data" / "reasoning-teacher"


def rt_files(task: str) -> tuple[Path, Path]:
    """Dataset and split files of one Fine-tune-CoT task in ../shared/data."""
    return SHARED_DATA / "dataset" / f"{task}.json", SHARED_DATA / "split" / f"{task}__default.json"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "workspace.db"


@pytest.fixture
def engine(db_path: Path):
    from db.session import open_workspace

    eng = open_workspace(db_path)
    yield eng
    eng.dispose()


@pytest.fixture
def sqa(engine):
    """The StrategyQA dataset of ../shared/data imported as 'sqa'; returns the Dataset row."""
    from db.queries import save_dataset
    from db.session import session_scope
    from engine.data import reasoning_teacher

    spec = reasoning_teacher.load("sqa", *rt_files("strategy_qa"))
    with session_scope(engine) as s:
        return save_dataset(s, spec)


@pytest.fixture(scope="session")
def student():
    """The real bundled student (model, tokenizer), loaded once per test run."""
    from engine.models import load_model

    return load_model("default", device="cpu")


def pytest_addoption(parser):
    """``--heavy``: the heavy variants of tests/reliability (10 kills per stage, more generated inputs)."""
    parser.addoption(
        "--heavy",
        action="store_true",
        default=False,
        help="run the heavy variants of the reliability suite (also: SERT_TUI_HEAVY=1)",
    )


def tiny_llama(vocab_size: int, *, layers: int = 2, seed: int = 0, **config):
    """A randomly initialised Llama-family model small enough for unit tests: 32 wide, 4 query heads sharing
    2 key/value heads (grouped-query attention, as SmolLM2), ``layers`` layers; ``config``: more LlamaConfig
    fields."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        **config,
    )
    return LlamaForCausalLM(cfg)
