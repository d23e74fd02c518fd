"""Files the workspace writes beside its database: owner-only, whole or not at all, never over a file unasked.

A workspace may hold models trained on private data, teacher rationales and logs of runs, so its folders
are created ``0o700`` and its files ``0o600`` (the database itself: :mod:`db.session`). A file a person asked
for (an export) is written to a temporary name in the same folder and then linked into place, so that a
reader never sees half a file and an existing file -- even one created a moment before -- is never replaced
unless ``force`` says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

from db.errors import UserError

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

FILE_MODE = 0o600
DIR_MODE = 0o700


def workspace_dir(database: Engine) -> Path:
    """The folder of the workspace file, where its checkpoints and TensorBoard runs go."""
    name = database.url.database
    if not name or name == ":memory:":
        raise RuntimeError("checkpoints and logs need a workspace file (not an in-memory database)")
    return Path(name).resolve().parent


def private_dir(path: Path | str) -> Path:
    """``path`` (and missing parents) as a folder only its owner can enter."""
    path = Path(path)
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(path, DIR_MODE)
    return path


def refuse_existing(path: Path | str, force: bool) -> None:
    """The error an existing ``path`` gets when ``force`` was not given (checked again when writing)."""
    if Path(path).exists() and not force:
        raise UserError(f"{path}: already exists (use --force to overwrite)")


@contextlib.contextmanager
def new_file(path: Path | str, *, force: bool = False, text: bool = True) -> Iterator[IO]:
    """Write ``path`` through the yielded handle: owner-only, in place only once the block ends without an
    error, refusing an existing file unless ``force`` (then replacing it in one step)."""
    path = Path(path)
    refuse_existing(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # mode 0o600
    try:
        with os.fdopen(fd, "w" if text else "wb", **({"encoding": "utf-8"} if text else {})) as handle:
            yield handle
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _link_new(tmp: str, path: Path) -> None:
    """Give the finished temporary file its name unless that name is taken (no check-then-write race)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UserError(f"{path}: already exists (use --force to overwrite)") from None
    except OSError as exc:  # a filesystem without hard links: create the name exclusively, then copy
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        except FileExistsError:
            raise UserError(f"{path}: already exists (use --force to overwrite)") from None
        with os.fdopen(fd, "wb") as out, open(tmp, "rb") as src:
            out.write(src.read())


def write_private(path: Path | str, text: str) -> Path:
    """Write a file the workspace owns (a config the app made): owner-only, replacing any old one whole."""
    with new_file(path, force=True) as handle:
        handle.write(text)
    return Path(path)


def open_private_append(path: Path | str) -> IO[bytes]:
    """A log file opened for appending, created owner-only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, FILE_MODE)
    return os.fdopen(fd, "ab")
