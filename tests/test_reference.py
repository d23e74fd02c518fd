"""docs/reference.md is generated from the code (scripts/reference.py, ``make reference``): the committed file must
be what the script writes now, and the config's descriptions are the ones ``sert-tui config init`` writes."""

from __future__ import annotations

import argparse

import pytest

from engine.config import ExperimentConfig, SamplingConfig, Section, render_default_config
from scripts import reference
from sert_tui.cli import build_parser


def committed() -> str:
    return reference.OUT.read_text(encoding="utf-8")


def config_fields():
    for name, field in ExperimentConfig.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            for key, sub in field.annotation.model_fields.items():
                yield f"{name}.{key}", sub
        else:
            yield name, field


def test_the_committed_reference_is_what_the_code_says() -> None:
    assert committed() == reference.render(), "docs/reference.md is out of date: run `make reference`"
    assert reference.main(["--check"]) == 0


def test_a_description_changed_without_regenerating_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """Change one Field description, as an edit of engine/config.py would: both the generated reference and
    ``config init`` follow it, and the committed file no longer matches (the test above would fail)."""
    changed = "the top-k of the continuation sampler, described anew"
    monkeypatch.setattr(SamplingConfig.model_fields["top_k"], "description", changed)
    text = reference.render()
    assert text != committed()
    assert f"| `sampling.top_k` | int | `10` | ≥ 1 | {changed} |" in text
    assert f"top_k = 10  # {changed}" in render_default_config()
    assert reference.main(["--check"]) == 1


def test_every_key_is_described_the_same_in_the_reference_and_config_init() -> None:
    text, init, paper = committed(), render_default_config("cpu"), render_default_config("paper")
    described = 0
    for key, field in config_fields():
        assert f"| `{key}` |" in text, key
        if field.description:
            described += 1
            assert reference.escape(field.description) in text, key
            assert f"# {field.description}" in init and f"# {field.description}" in paper, key
    assert described > 50


def test_every_command_and_option_is_in_the_reference() -> None:
    text = committed()

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
        assert f"### {' '.join(('sert-tui', *path))}\n" in text, path
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):  # -h on every command: not repeated in the reference
                continue
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, (*path, name))
            elif action.help:
                assert reference.escape(action.help) in text, (path, action.option_strings)
            for option in action.option_strings:
                assert f"`{option}" in text or f", {option}" in text, (path, option)

    walk(build_parser(), ())


def test_range_and_type_come_from_the_field_metadata() -> None:
    text = committed()
    assert "| `sampling.top_p` | float | `0.95` | > 0, ≤ 1 |" in text
    assert "| `train.warmup_ratio` | float | `0.0` | ≥ 0, < 1 |" in text
    assert "| `data.train_limit` | int (optional) | unset | ≥ 1 |" in text
    assert '| `log.report_to` | list of "tensorboard" \\| "trackio" | `[]` |' in text
