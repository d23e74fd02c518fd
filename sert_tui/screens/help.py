"""Help: every key of every screen, built from the bindings themselves so it never goes stale.

Modelled on Posting's help screen: each ``Binding`` carries a short ``description`` (the footer's word), a
``tooltip`` (the longer explanation, also shown when the mouse rests on the footer key) and a stable ``id``
(``paths.accept``) that a user keymap can remap (see :mod:`sert_tui.keymap`). The screen is given the classes
whose bindings it lists (the app passes its screens, modals and widgets) and adds any screen of the active stack
it was not given; it never imports the app. Keys are shown as they are bound now, keymap included.
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Mapping, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.keys import format_key
from textual.screen import ModalScreen
from textual.widgets import Label, Static

#: Key names shown as words (Textual would draw some of them as symbols).
KEY_NAMES = {"space": "space", "backspace": "backspace", "escape": "esc", "enter": "enter", "delete": "del"}
KEY_WIDTH = 16
ID_WIDTH = 24
DEFAULT_WIDTH = 116


def key_label(keys: str) -> str:
    """``"escape,q,question_mark"`` → ``"esc / q / ?"``."""
    labels = []
    for key in (k.strip() for k in keys.split(",")):
        *modifiers, base = key.split("+") if len(key) > 1 else [key]
        labels.append("+".join([*modifiers, KEY_NAMES.get(base) or format_key(base)]))
    return " / ".join(labels)


def bindings_of(cls: type) -> list[Binding]:
    """The bindings a class of ours declares, its own first, then those it inherits from our base classes
    (Textual's own bindings are not ours to document)."""
    out: list[Binding] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        if klass.__module__.startswith("textual") or "BINDINGS" not in klass.__dict__:
            continue
        for b in klass.__dict__["BINDINGS"]:
            binding = b if isinstance(b, Binding) else Binding(*b)
            ident = binding.id or f"{binding.key}:{binding.action}"
            if ident not in seen:
                seen.add(ident)
                out.append(binding)
    return out


def help_title(cls: type) -> str:
    return getattr(cls, "HELP_TITLE", "") or cls.__name__


def binding_ids(classes: Iterable[type]) -> list[str]:
    """Every binding id of these classes (what a keymap may name)."""
    return [b.id for cls in classes for b in bindings_of(cls) if b.id]


def effective_keys(binding: Binding, keymap: Mapping[str, str]) -> str:
    return keymap.get(binding.id, binding.key) if binding.id else binding.key


def help_text(
    classes: Sequence[type], keymap: Mapping[str, str] | None = None, width: int = DEFAULT_WIDTH, note: str = ""
) -> Text:
    """The help as text: one section per class, one entry per binding (keys, id, what it does), then ``note``."""
    keymap = keymap or {}
    text_width = max(24, width - 2 - KEY_WIDTH - ID_WIDTH)
    indent = " " * (2 + KEY_WIDTH + ID_WIDTH)
    t = Text()
    for cls in classes:
        entries: list[tuple[str, str, str]] = []
        for b in bindings_of(cls):
            what = b.description or b.action
            if b.tooltip and b.tooltip != b.description:
                what = f"{what}: {b.tooltip}"
            entries.append((key_label(effective_keys(b, keymap)), b.id or "", what))
        entries += [(keys, "", what) for keys, what in getattr(cls, "HELP_EXTRA", ())]
        if not entries:
            continue
        t.append(f"{help_title(cls)}\n", style="bold underline")
        for keys, ident, what in entries:
            t.append(f"  {keys:<{KEY_WIDTH - 1}} ", style="bold")
            t.append(f"{ident:<{ID_WIDTH - 1}} ", style="dim")
            lines = textwrap.wrap(what, text_width) or [""]
            t.append(lines[0] + "\n")
            for line in lines[1:]:
                t.append(f"{indent}{line}\n")
        t.append("\n")
    if note:
        t.append(note, style="dim")
    return t


class HelpScreen(ModalScreen[None]):
    """Every key of the classes given (and of the screens open), with its id and explanation."""

    HELP_TITLE = "Help"
    BINDINGS = [
        Binding("escape,q,question_mark", "close", "Close", tooltip="close the help", id="help.close"),
    ]

    def __init__(self, classes: Sequence[type], keymap: Mapping[str, str] | None = None, note: str = "") -> None:
        """``classes``: whose bindings to list, in order; ``keymap``: binding id → keys in force; ``note``: a line
        under the keys (where the keymap lives)."""
        super().__init__()
        self.given = list(classes)
        self.keymap = dict(keymap or {})
        self.note = note
        self._width = DEFAULT_WIDTH

    @property
    def classes_shown(self) -> list[type]:
        """The classes given, then the screens of the active stack that were not given."""
        shown = list(self.given)
        for screen in self.app.screen_stack:
            cls = type(screen)
            if cls not in shown and bindings_of(cls):
                shown.append(cls)
        return shown

    def text(self, width: int | None = None) -> Text:
        return help_text(self.classes_shown, self.keymap, width or self._width, self.note)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(id="help-body", markup=False)

    def on_mount(self) -> None:
        self.query_one("#help-body", Static).update(self.text())

    def on_resize(self) -> None:
        self.call_after_refresh(self._rewrap)

    def _rewrap(self) -> None:
        body = self.query_one("#help-body", Static)
        width = body.content_size.width
        if width and width != self._width:
            self._width = width
            body.update(self.text())

    def action_close(self) -> None:
        self.dismiss(None)
