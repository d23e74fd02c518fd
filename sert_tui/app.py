"""The Textual app. Importing this module must stay light: no torch, no transformers (first frame < 2 s)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from sert_tui.screens.home import HomeScreen


class SertApp(App):
    """sert-tui: browse the workspace, curate reasoning paths, watch jobs."""

    CSS_PATH = "sert_tui.tcss"
    TITLE = "sert-tui"
    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("r", "refresh", "Refresh"),
    ]

    def __init__(self, workspace: Path):
        super().__init__()
        self.workspace = Path(workspace)
        self.sub_title = str(self.workspace)
        self._engine = None

    @property
    def db(self):
        """The workspace's SQLAlchemy engine, opened (and migrated) on first use."""
        if self._engine is None:
            from db.session import open_workspace

            self._engine = open_workspace(self.workspace)
        return self._engine

    def on_mount(self) -> None:
        self.push_screen(HomeScreen())

    def action_refresh(self) -> None:
        screen = self.screen
        if hasattr(screen, "reload"):
            screen.reload()


def run_app(workspace: Path) -> int:
    from db.session import open_workspace

    # Open once before the UI starts so that a damaged or newer workspace is one clear error line.
    engine = open_workspace(workspace)
    app = SertApp(workspace)
    app._engine = engine
    app.run()
    return app.return_code or 0
