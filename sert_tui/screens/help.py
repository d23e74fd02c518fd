"""Help: every key of every screen, built from the screens' own bindings so it never goes stale."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

KEY_NAMES = {
    "right_square_bracket": "]",
    "left_square_bracket": "[",
    "slash": "/",
    "question_mark": "?",
    "space": "space",
    "backspace": "backspace",
    "escape": "esc",
    "enter": "enter",
}


def key_label(keys: str) -> str:
    return " / ".join(KEY_NAMES.get(k.strip(), k.strip()) for k in keys.split(","))


def screen_classes() -> list[tuple[str, type]]:
    from sert_tui.app import SertApp
    from sert_tui.screens.home import HomeScreen
    from sert_tui.screens.modals import ConfirmScreen, QuitScreen
    from sert_tui.screens.monitor import MonitorScreen
    from sert_tui.screens.paths import PathsScreen
    from sert_tui.screens.results import PredictionsScreen, ResultsScreen

    return [
        ("Everywhere", SertApp),
        ("Home", HomeScreen),
        ("Paths (curation)", PathsScreen),
        ("Training monitor", MonitorScreen),
        ("Results", ResultsScreen),
        ("Predictions", PredictionsScreen),
        ("Confirm dialogs", ConfirmScreen),
        ("Quit dialog", QuitScreen),
    ]


def bindings_of(cls: type) -> list[Binding]:
    out = []
    for b in cls.__dict__.get("BINDINGS", []):
        if isinstance(b, Binding):
            out.append(b)
        else:
            out.append(Binding(*b))
    return out


def help_text() -> Text:
    t = Text()
    for title, cls in screen_classes():
        t.append(f"{title}\n", style="bold underline")
        extra = getattr(cls, "KEY_HELP", {})
        for b in bindings_of(cls):
            t.append(f"  {key_label(b.key):<14}", style="bold")
            t.append(extra.get(b.key.split(",")[0], b.description or b.action))
            t.append("\n")
        if title == "Everywhere":
            t.append(f"  {'ctrl+p':<14}", style="bold")
            t.append("command palette: every action of the current screen, jobs by number, themes\n")
            t.append(f"  {'tab':<14}", style="bold")
            t.append("move between tables\n")
        if title == "Paths (curation)":
            t.append(f"  {'↑ ↓ pgup pgdn':<14}", style="bold")
            t.append("move within the page (the detail pane follows)\n")
        t.append("\n")
    return t


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label("Keys", classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(help_text(), id="help-body", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
