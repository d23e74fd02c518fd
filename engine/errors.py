"""Errors a user can act on: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input or state that the user can fix; its message is shown as is."""


class WorkspaceError(UserError):
    """The workspace file cannot be opened (damaged, not SQLite, newer schema)."""
