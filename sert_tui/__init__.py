"""sert-tui: Self-Enhanced Reasoning Training in the terminal (presentation layer and the command)."""

__version__ = "0.1.0"
