"""``sert-tui config init --preset cpu|paper``: the file says which preset it is and where it is not the paper."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.config import PAPER, PRESETS, ExperimentConfig, differences_from_paper, load_config, render_default_config
from sert_tui.cli import main


def _init(tmp_path: Path, *args: str) -> tuple[str, ExperimentConfig]:
    out = tmp_path / f"config{'-'.join(args)}.toml"
    assert main(["--db", str(tmp_path / "w.db"), "config", "init", str(out), *args]) == 0
    return out.read_text(), load_config(out)


def test_paper_preset_writes_the_papers_values(tmp_path: Path) -> None:
    text, cfg = _init(tmp_path, "--preset", "paper")
    assert text.splitlines()[0].startswith('# sert-tui experiment config, preset "paper": the paper\'s values')
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.lr) == (20.0, 8, 3e-4)
    assert differences_from_paper(cfg) == {}
    assert "differs from the paper" not in text.lower()
    assert "Every value the SERT paper (arXiv 2502.12744) fixes is the paper's." in text


def test_cpu_preset_is_the_default_and_says_where_it_differs(tmp_path: Path) -> None:
    text, cfg = _init(tmp_path)
    assert (text, cfg) == _init(tmp_path, "--preset", "cpu")
    assert text.splitlines()[0].startswith('# sert-tui experiment config, preset "cpu": the bundled student on a CPU')
    # the sweep's recipe (docs/results.md, "Training recipe"); every other key is its default
    assert (cfg.train.epochs, cfg.train.lr) == (3.0, 1e-4)
    expected = ExperimentConfig()
    expected.train.epochs, expected.train.lr = 3.0, 1e-4
    assert cfg == expected
    assert differences_from_paper(cfg) == {"train.epochs": (3.0, 20.0), "train.lr": (1e-4, 3e-4)}
    assert (
        "# Differs from the SERT paper (arXiv 2502.12744): train.epochs = 3.0 (paper: 20.0), "
        "train.lr = 0.0001 (paper: 0.0003)" in text
    )
    [epochs] = [line for line in text.splitlines() if line.startswith("epochs = ")]
    assert epochs.startswith("epochs = 3.0") and "differs from the paper (20.0) in preset cpu" in epochs
    marked = [line.split(" =")[0] for line in text.splitlines() if "differs from the paper (" in line]
    assert marked == ["epochs", "lr"]  # batch 8 is the paper's and says nothing


def test_the_paper_values_are_those_of_the_design_notes() -> None:
    # DESIGN.md section 1: "batch 8, AdamW, lr 3e-4, 20 epochs"; the sampler and the filters of stage 1
    assert {k: PAPER[k] for k in ("train.batch_size", "train.lr", "train.epochs")} == {
        "train.batch_size": 8,
        "train.lr": 3e-4,
        "train.epochs": 20.0,
    }
    assert (PAPER["sampling.first_tokens"], PAPER["sampling.per_branch"], PAPER["sampling.top_k"]) == (5, 5, 10)
    assert (PAPER["filters.min_tokens"], PAPER["filters.max_rep2"], PAPER["filters.min_perplexity"]) == (25, 0.2, 5.0)


def test_the_command_offers_exactly_the_presets(tmp_path: Path, capsys) -> None:
    from sert_tui.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["config"]
    init = next(a for a in sub._actions if a.dest == "config_command").choices["init"]
    [preset] = [a for a in init._actions if a.dest == "preset"]
    assert set(preset.choices) == set(PRESETS) and preset.default == "cpu"
    with pytest.raises(SystemExit) as exc:
        main(["--db", str(tmp_path / "w.db"), "config", "init", "--preset", "gpu"])
    assert exc.value.code == 2
    assert render_default_config("paper") != render_default_config("cpu")
