"""What the screens need of the app, typed, without importing the app (which imports the screens).

Screens read the workspace through ``workspace_app(self).db`` and the job processes this app started through
``.launcher``; what they ask the app to *do* (open a job, cancel it, show its error) they post upward as
messages, which the app handles. ``SertApp`` is the one ``WorkspaceApp``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.app import App
from textual.dom import DOMNode

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from engine.pipeline.processes import Launcher
    from sert_tui.services.decisions import DecisionWriter


class WorkspaceApp(App):
    """An app on one workspace: its engine (opened on first use, from any thread), its job
    launcher and the writer of a person's decisions."""

    launcher: Launcher

    @property
    def db(self) -> Engine:
        raise NotImplementedError

    @property
    def decision_writer(self) -> DecisionWriter:
        """The one thread that writes a person's decisions, in order."""
        raise NotImplementedError


def workspace_app(node: DOMNode) -> WorkspaceApp:
    """The app a screen or widget runs in, as a :class:`WorkspaceApp`."""
    app = node.app
    if not isinstance(app, WorkspaceApp):
        raise TypeError(f"{type(node).__name__} needs a WorkspaceApp, not {type(app).__name__}")
    return app
