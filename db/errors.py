"""Errors a user can act on: the CLI prints them as one line and exits with code 2."""


class UserError(Exception):
    """Bad input or state that the user can fix; its message is shown as is."""


def brief(value: object, limit: int = 60) -> str:
    """``repr`` of an input for an error message, cut short: an input may be megabytes long."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def first_line(error: BaseException | str | None, limit: int | None = None) -> str:
    """The first non-blank line of an error message, cut to ``limit`` characters: libraries append context
    lines (SQLAlchemy a link, tracebacks their frames) that do not belong in a one-line message. An exception
    without a message gives its class name; SQLAlchemy's wrapper gives the driver's own message."""
    if isinstance(error, BaseException):
        cause = getattr(error, "orig", None) or error
        text = str(cause).strip()
        line = text.splitlines()[0] if text else cause.__class__.__name__
    else:
        text = (error or "").strip()
        line = text.splitlines()[0] if text else ""
    return line[:limit] if limit else line


def plain(name: object, limit: int = 60) -> str:
    """A name from an input (a key, a split) as is when it is short and printable, else :func:`brief`."""
    text = str(name)
    return text if len(text) <= limit and text.isprintable() else brief(name, limit)


class WorkspaceError(UserError):
    """The workspace file cannot be opened (damaged, not SQLite, newer schema)."""
