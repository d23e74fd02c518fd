"""Write docs/reference.md from the code: every command and option of the ``sert-tui`` parser (help, defaults,
choices) and every key of the experiment config (type, default, range, description).

    make reference                      # or: python scripts/reference.py
    python scripts/reference.py --check # exit 1 when docs/reference.md is not what the code says

The descriptions are the same ``Field(description=...)`` strings that ``sert-tui config init`` writes as
comments, and the same ``help=`` strings that ``--help`` prints: change them there, then run ``make reference``
(tests/test_reference.py fails while the committed file differs).
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "docs" / "reference.md"
#: argparse wraps usage lines to the terminal's width: a fixed one, so that the file does not depend on it.
USAGE_COLUMNS = "100"


def escape(text: str) -> str:
    """Text for one cell of a Markdown table."""
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text.replace("<", "&lt;").replace(">", "&gt;")  # <task> is not an HTML tag


def code(value: str) -> str:
    """A code span for a table cell (GitHub splits cells at every unescaped ``|``, code spans included)."""
    return f"`{value}`".replace("|", "\\|") if value else ""


# -- commands ------------------------------------------------------------------------------------------------
def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...], helps: dict[str, str]):
    """(path, parser, help) of every command, depth first, in the order of ``--help``."""
    yield path, parser, helps.get(path[-1], "") if path else (parser.description or "")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub_helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield from _commands(sub, (*path, name), sub_helps)


def _argument_rows(parser: argparse.ArgumentParser) -> list[str]:
    rows = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.option_strings:
            name = ", ".join(action.option_strings)
            if action.nargs != 0:
                name += f" {action.metavar or action.dest.upper()}"
        else:
            name = action.metavar or action.dest
            name = {"?": f"[{name}]", "+": f"{name} ..."}.get(action.nargs, name)  # type: ignore[arg-type]
        if isinstance(action, argparse._VersionAction):
            default = ""
        elif action.nargs == 0:
            default = "off" if action.default is False else ""
        elif action.default in (None, argparse.SUPPRESS) or action.default == []:
            default = ""
        else:
            default = code(str(action.default))
        required = " (required)" if action.required and action.option_strings else ""
        choices = ", ".join(code(str(c)) for c in action.choices) if action.choices else ""
        help_text = (action.help or "") if action.help != argparse.SUPPRESS else ""
        rows.append(f"| {code(name)}{required} | {escape(help_text)} | {default} | {choices} |")
    return rows


def commands_section() -> list[str]:
    from sert_tui.cli import build_parser

    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_COLUMNS
    try:
        commands = list(_commands(build_parser(), (), {}))
        lines = ["## Commands", ""]
        for path, _parser, help_text in commands:
            if path:
                title = " ".join(("sert-tui", *path))
                indent = "  " * (len(path) - 1)
                lines.append(f"{indent}- [{title}](#{slug(title)}){': ' + escape(help_text) if help_text else ''}")
        lines.append("")
        for path, parser, help_text in commands:
            title = " ".join(("sert-tui", *path))
            lines += [f"### {title}", ""]
            if help_text:
                lines += [escape(help_text), ""]
            lines += ["```", parser.format_usage().strip(), "```", ""]
            rows = _argument_rows(parser)
            if rows:
                lines += ["| argument | help | default | choices |", "|---|---|---|---|", *rows, ""]
        return lines
    finally:
        if before is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = before


# -- config --------------------------------------------------------------------------------------------------
def type_name(annotation: Any) -> str:
    """``int``, ``float | unset``, ``"a" | "b"``, ``list of "a" | "b"`` ..."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " | ".join(f'"{a}"' for a in args)
    if origin in (list, tuple):
        return f"list of {type_name(args[0])}"
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        named = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(named) + (" (optional)" if type(None) in args else "")
    return getattr(annotation, "__name__", str(annotation))


def range_text(field: Any) -> str:
    signs = (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<"))
    parts = [f"{sign} {getattr(m, attr)}" for m in field.metadata for attr, sign in signs if hasattr(m, attr)]
    pattern = next((m.pattern for m in field.metadata if getattr(m, "pattern", None)), None)
    if pattern:
        parts.append(f"matches `{pattern}`")
    return ", ".join(parts)


def default_text(field: Any) -> str:
    from engine.config import _toml_value

    value = field.get_default(call_default_factory=True)
    return "unset" if value is None else code(_toml_value(value))


def config_section() -> list[str]:
    from engine.config import PRESETS, ExperimentConfig, Section, _toml_value

    lines = [
        "## Config keys",
        "",
        "An experiment config is a TOML file (`sert-tui config init` writes one with these descriptions as",
        "comments; `sert-tui config check FILE` validates one). Every key is optional; unknown keys and values of",
        "another type are refused with one `error:` line naming the key. The presets of `config init --preset`",
        "set these keys where they differ from the defaults:",
        "",
        "| preset | keys it sets |",
        "|---|---|",
    ]
    for preset, values in PRESETS.items():
        lines.append(f"| `{preset}` | " + ", ".join(f"`{k} = {_toml_value(v)}`" for k, v in values.items()) + " |")
    lines.append("")
    top = [(n, f) for n, f in ExperimentConfig.model_fields.items() if not _is_section(f, Section)]
    sections = [(n, f) for n, f in ExperimentConfig.model_fields.items() if _is_section(f, Section)]
    header = ["| key | type | default | range | description |", "|---|---|---|---|---|"]
    if top:
        lines += ["### top level", "", *header]
        lines += [_key_row(name, field) for name, field in top]
        lines.append("")
    for name, field in sections:
        model = field.annotation
        lines += [f"### [{name}]", ""]
        if model.__doc__ and model.__doc__ is not Section.__doc__:
            lines += [escape(model.__doc__), ""]
        lines += header
        lines += [_key_row(f"{name}.{key}", sub) for key, sub in model.model_fields.items()]
        lines.append("")
    return lines


def _is_section(field: Any, section: type) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, section)


def _key_row(key: str, field: Any) -> str:
    return (
        f"| `{key}` | {escape(type_name(field.annotation))} | {default_text(field)} | {range_text(field)} | "
        f"{escape(field.description or '')} |"
    )


# -- the page ------------------------------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but ``-`` and ``_`` dropped, spaces to ``-``."""
    text = heading.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


def render() -> str:
    lines = [
        "# Reference",
        "",
        "<!-- Generated by `make reference` (scripts/reference.py) from sert_tui/cli and engine/config.py:",
        "     do not edit by hand; tests/test_reference.py fails while this file differs from what the code says. -->",
        "",
        "Every command with its options, and every key of the experiment config. `sert-tui COMMAND --help` prints",
        "the same help; `sert-tui config init` writes the same descriptions as comments.",
        "",
        "- [Commands](#commands)",
        "- [Config keys](#config-keys)",
        "",
        *commands_section(),
        *config_section(),
    ]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file differs, write nothing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out}: out of date; run `make reference`", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
