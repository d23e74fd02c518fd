"""Small modal screens: confirm, quit choices, full text (errors, logs), start-from-config and the new-job form."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Label, Select, Static

from db.vocabulary import STAGE_NAMES
from sert_tui.screens.help import key_label


def labelled(screen: Screen, label: str, binding_id: str) -> Content:
    """A button's label with the key that does the same (``Cancel the job [y]``): the first key bound now to
    that binding of the screen, keymap included. Plain text, never markup (``[y]`` is not a style)."""
    keys = [key for key, active in screen.active_bindings.items() if active.binding.id == binding_id]
    return Content(f"{label} [{key_label(keys[0])}]" if keys else label)


#: Stage choices of the forms: single stages plus the chain the default job runs.
STAGE_CHOICES = [("sample + filter", "sample,filter"), *((s, s) for s in STAGE_NAMES)]
FormResult = TypeVar("FormResult")


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question; `y` / `n` (or escape) answer it."""

    HELP_TITLE = "Confirm dialogs"
    BINDINGS = [
        Binding("y", "answer(True)", "Yes", tooltip="do what the dialog asks", id="confirm.yes"),
        Binding("n", "answer(False)", "No", tooltip="do not; nothing changes", id="confirm.no"),
        Binding("escape", "answer(False)", "No", show=False, tooltip="the same as No", id="confirm.escape"),
    ]

    def __init__(self, question: str, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.question = question
        self.yes, self.no = yes, no

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button(labelled(self, self.yes, "confirm.yes"), id="yes", variant="error")
                yield Button(labelled(self, self.no, "confirm.no"), id="no", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class QuitScreen(ModalScreen[str]):
    """Quitting while jobs this app started still run: cancel them, leave them running, or stay."""

    HELP_TITLE = "Quit dialog"
    BINDINGS = [
        Binding(
            "c",
            "choose('cancel')",
            "Cancel jobs and quit",
            tooltip="ask the job processes this app started to stop (finished work is kept), then quit",
            id="quit.cancel_jobs",
        ),
        Binding(
            "l",
            "choose('leave')",
            "Leave running and quit",
            tooltip="quit; the job processes go on without the app",
            id="quit.leave",
        ),
        Binding("escape,s", "choose('stay')", "Stay", tooltip="back to the app; nothing is stopped", id="quit.stay"),
    ]

    def __init__(self, running: list[str]) -> None:
        super().__init__()
        self.running = running

    def compose(self) -> ComposeResult:
        listing = "\n".join(f"  • {line}" for line in self.running)
        with Vertical(classes="dialog choices"):
            yield Static(
                f"This app started {len(self.running)} job process(es) that still run:\n{listing}\n\n"
                "They keep running without the app unless you cancel them (finished work is kept).",
                classes="dialog-text",
                markup=False,
            )
            with Horizontal(classes="dialog-buttons"):
                yield Button(labelled(self, "Cancel them and quit", "quit.cancel_jobs"), id="cancel", variant="error")
                yield Button(labelled(self, "Leave running and quit", "quit.leave"), id="leave", variant="warning")
                yield Button(labelled(self, "Stay", "quit.stay"), id="stay", variant="primary")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id or "stay")

    def action_choose(self, choice: str) -> None:
        self.dismiss(choice)


class TextScreen(ModalScreen[None]):
    """A long text in full (a job's error, a launch log), scrollable."""

    HELP_TITLE = "Text view (a job's error, a launch log)"
    BINDINGS = [Binding("escape,q,enter", "close", "Close", tooltip="close the text", id="text.close")]

    def __init__(self, title: str, text: str) -> None:
        super().__init__()
        self.title_text = title
        self.body = text

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text, classes="dialog-title")
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(self.body, id="text-body", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


class FormScreen(ModalScreen[FormResult | None]):
    """A form with Start and Cancel buttons: Start or enter in a field submits (``submit`` dismisses with the
    result, or shows what is wrong and stays), Cancel or escape dismisses with None."""

    HELP_TITLE = "Forms (new job, job from a config file)"
    BINDINGS = [
        Binding(
            "escape",
            "cancel",
            "Cancel",
            tooltip="close the form; nothing starts (enter in a field: Start)",
            id="form.cancel",
        ),
    ]

    def submit(self) -> None:
        raise NotImplementedError

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "start":
            self.submit()
        else:
            self.dismiss(None)

    def on_input_submitted(self, _event: Input.Submitted) -> None:
        self.submit()

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfigFileScreen(FormScreen[tuple[Path, list[str]]]):
    """Start a job from a config file: its path and the stage(s)."""

    def __init__(self, initial: str = "") -> None:
        super().__init__()
        self.initial = initial

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Start a job from a config file", classes="dialog-title")
            yield Input(value=self.initial, placeholder="path/to/experiment.toml", id="config-path")
            yield Select(STAGE_CHOICES, value="sample,filter", allow_blank=False, id="config-stage")
            yield Static("", id="config-error", classes="error-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", id="start", variant="success")
                yield Button(labelled(self, "Cancel", "form.cancel"), id="cancel")

    def submit(self) -> None:
        from db.errors import UserError
        from engine.config import load_config

        path = Path(self.query_one("#config-path", Input).value.strip()).expanduser()
        try:
            load_config(path)
        except UserError as exc:
            self.query_one("#config-error", Static).update(str(exc))
            return
        stages = str(self.query_one("#config-stage", Select).value).split(",")
        self.dismiss((path, stages))


class NewJobScreen(FormScreen[tuple[dict, list[str]]]):
    """A small form with the paper's defaults; returns the config values and the stages to run."""

    def __init__(self, datasets: list[str]) -> None:
        super().__init__()
        self.datasets = datasets

    def compose(self) -> ComposeResult:
        from engine.config import ExperimentConfig

        d = ExperimentConfig()
        options = [(name, name) for name in self.datasets]
        with Vertical(classes="dialog"):
            yield Label("New job (empty fields take the paper's defaults)", classes="dialog-title")
            yield Label("Dataset")
            if options:
                yield Select(options, value=options[0][1], allow_blank=False, id="form-dataset")
            else:
                yield Static("(no dataset in the workspace: `d` on the home screen generates one)", markup=False)
            yield Label("Stages")
            yield Select(STAGE_CHOICES, value="sample,filter", allow_blank=False, id="form-stage")
            yield Label("Student model (default = bundled SmolLM2-135M-Instruct, or a hub id / path)")
            yield Input(value=d.student.model, id="form-model")
            yield Label("Training questions (first N of the split; empty = all)")
            yield Input(value="", placeholder="all", id="form-train-limit", type="integer")
            yield Label(f"Max new tokens per path (default {d.sampling.max_new_tokens})")
            yield Input(value=str(d.sampling.max_new_tokens), id="form-max-new-tokens", type="integer")
            yield Label(f"Training epochs (paper: 20 on a GPU; default {d.train.epochs:g})")
            yield Input(value=f"{d.train.epochs:g}", id="form-epochs", type="number")
            yield Static("", id="form-error", classes="error-text", markup=False)
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start", id="start", variant="success")
                yield Button(labelled(self, "Cancel", "form.cancel"), id="cancel")

    def values(self) -> dict:
        """The config values of the form (only what differs from an empty config is written)."""
        values: dict = {"name": "form"}
        datasets = self.query("#form-dataset")
        if datasets:
            values["data"] = {"dataset": str(datasets.first(Select).value)}
        model = self.query_one("#form-model", Input).value.strip()
        values["student"] = {"model": model or "default"}
        limit = self.query_one("#form-train-limit", Input).value.strip()
        if limit:
            values.setdefault("data", {})["train_limit"] = int(limit)
        tokens = self.query_one("#form-max-new-tokens", Input).value.strip()
        if tokens:
            values["sampling"] = {"max_new_tokens": int(tokens)}
        epochs = self.query_one("#form-epochs", Input).value.strip()
        if epochs:
            values["train"] = {"epochs": float(epochs)}
        return values

    def submit(self) -> None:
        from db.errors import UserError
        from engine.config import config_from_dict

        try:
            values = self.values()
            config_from_dict(values, "form")
        except (UserError, ValueError) as exc:
            self.query_one("#form-error", Static).update(str(exc))
            return
        if not self.query("#form-dataset"):
            self.query_one("#form-error", Static).update("no dataset to run on")
            return
        stages = str(self.query_one("#form-stage", Select).value).split(",")
        self.dismiss((values, stages))
