"""The user's keymap: binding id → keys, read from the app's config file and applied with ``App.set_keymap``.

Every binding of the app, its screens, modals and widgets has a stable ``id`` (``paths.accept``,
``home.new_job``, ...; the help screen lists them). The config file is TOML, in the user's config directory
(``SERT_TUI_CONFIG`` names another file)::

    [keymap]
    "paths.accept" = "z"            # one key
    "paths.reject" = "x,delete"     # several keys, comma-separated
    "home.results" = "ctrl+t"

    [keymap.monitor]                # a nested table is the same as its dotted ids
    overlay_all = "O"

Keys use Textual's names: a character (``a``, ``A``, ``?``, ``]``), a key name (``escape``, ``enter``, ``space``,
``f1``, ``pageup``, ``question_mark``), with optional modifiers (``ctrl+``, ``alt+``, ``shift+``, ``meta+``).
A bad entry (an id no binding has, a key Textual does not know, a value that is not a string) is left out and
reported when the app starts, naming the entry; the others apply. A key moved onto the key of another binding
of the same screen is applied and reported (the other binding loses that key). This module imports nothing heavy.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from textual.binding import Binding
from textual.keys import Keys, key_to_character

MODIFIERS = frozenset({"ctrl", "alt", "shift", "meta", "super", "hyper"})
_NAMED_KEYS = frozenset(k.value.rpartition("+")[2] for k in Keys) | {"space", "enter", "tab", "backspace"}


def config_path() -> Path:
    """The app's config file: ``$SERT_TUI_CONFIG`` or ``config.toml`` in the user's config directory."""
    override = os.environ.get("SERT_TUI_CONFIG")
    if override:
        return Path(override).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir("sert-tui", appauthor=False)) / "config.toml"


def key_problem(key: str) -> str | None:
    """Why one key (``ctrl+x``, ``a``, ``question_mark``) is not a key Textual can bind, or None when it is."""
    key = key.strip()
    if not key:
        return "an empty key"
    if len(key) == 1:
        return None
    *modifiers, base = key.split("+")
    bad = [m for m in modifiers if m not in MODIFIERS]
    if bad:
        return f"{bad[0]!r} is not a modifier ({', '.join(sorted(MODIFIERS))})"
    if not base:
        return f"{key!r} names no key after its modifier"
    if len(base) == 1 or base in _NAMED_KEYS or key_to_character(base) is not None:
        return None
    return f"{base!r} is not a key name Textual knows (e.g. escape, enter, space, f1, pageup, question_mark)"


@dataclass
class Keymap:
    """A keymap read from a config file, with what was wrong in it."""

    bindings: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    source: Path | None = None


def _flatten(table: Mapping, prefix: str = "") -> Iterable[tuple[str, object]]:
    for name, value in table.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def parse_keymap(table: object, where: str = "keymap") -> Keymap:
    """Check the entries of a ``[keymap]`` table (their ids are checked by the app, which knows the bindings)."""
    result = Keymap()
    if not isinstance(table, Mapping):
        result.problems.append(f'{where}: [keymap] must be a table of binding id = "keys"')
        return result
    for binding_id, value in _flatten(table):
        if not isinstance(value, str):
            result.problems.append(f'{where}: {binding_id!r} = {value!r}: the keys must be a string such as "ctrl+x"')
            continue
        problems = [p for p in (key_problem(k) for k in value.split(",")) if p]
        if problems:
            result.problems.append(f"{where}: {binding_id!r} = {value!r}: {problems[0]}")
            continue
        result.bindings[binding_id] = ",".join(k.strip() for k in value.split(","))
    return result


def _canonical(key: str) -> str:
    """One spelling per key, so that ``?`` and ``question_mark`` compare equal."""
    key = key.strip()
    return key_to_character(key) or key


def clashes(bindings: Iterable[Binding], keymap: Mapping[str, str], where: str = "keymap") -> list[str]:
    """Keys the keymap moves onto the key of another binding of the same screen or widget (that binding then
    loses its key: Textual drops it without a word)."""
    bindings = list(bindings)
    owners: dict[str, list[Binding]] = {}
    for b in bindings:
        keys = keymap.get(b.id, b.key) if b.id else b.key
        for key in keys.split(","):
            owners.setdefault(_canonical(key), []).append(b)
    problems = []
    for b in bindings:
        if not b.id or b.id not in keymap:
            continue
        for key in keymap[b.id].split(","):
            for other in owners.get(_canonical(key), []):
                if other is not b:
                    problems.append(
                        f"{where}: {b.id!r} = {keymap[b.id]!r} takes {key.strip()!r} from "
                        f"{other.id or other.action!r} ({other.description}), which is left without that key"
                    )
    return problems


def load_keymap(path: Path | None = None) -> Keymap:
    """The ``[keymap]`` table of the config file (none there: an empty keymap); problems are reported, not raised."""
    path = config_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Keymap(source=path)
    except OSError as exc:
        return Keymap(problems=[f"{path}: cannot read the config file ({exc.strerror or exc})"], source=path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        return Keymap(problems=[f"{path}: not valid TOML ({exc}); no key was remapped"], source=path)
    if "keymap" not in data:
        return Keymap(source=path)
    result = parse_keymap(data["keymap"], where=str(path))
    result.source = path
    return result
