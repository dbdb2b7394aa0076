"""Secret files on disk: an exclusive lock per CA directory, atomic writes, ssh-style key mode checks.

Every process that reads or writes a CA directory (the control plane's replicas, `controlplane ca rotate`,
`controlplane token`) takes the directory's lock first, so nobody ever sees a half-written CA: a process
that starts while another one generates the root waits for it and then loads what it wrote. The lock is an
`flock` on `.lock` (released by the kernel when a process dies, so a crash never leaves a stale lock).
Each file is written to a temporary name in the same directory and renamed over the target, so a reader
that does not take the lock still sees either the old or the new content of a file, never a prefix.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

LOCK_NAME = ".lock"
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


class CaError(Exception):
    """A CA directory that cannot be used as it is (a clear startup error).

    The message names the file, what is wrong with it and what to do. Defined here so the token authority,
    which keeps its key in the same directory, raises the same error; `controlplane.security.ca` exports it.
    """


def require_utc(now: datetime) -> datetime:
    """`now` as given, after checking it is timezone-aware (naive datetimes are ambiguous)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"`now` must be a timezone-aware datetime (UTC), got {now!r}")
    return now


def ensure_private_dir(path: Path) -> None:
    """Create `path` (and parents) if missing; a directory we create is 0700."""
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR_MODE)
        os.chmod(path, PRIVATE_DIR_MODE)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold the exclusive lock of `directory` (created if missing) for the duration of the block."""
    fd: int | None = None
    try:
        ensure_private_dir(directory)
        fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
    except OSError as e:
        # a read-only directory (a mounted secret holding a plugged-in CA) cannot be half-written by
        # anyone, so reading it without the lock is safe; anything else is a startup error
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM) or not directory.is_dir():
            raise CaError(f"{directory}: cannot use as a CA directory: {e.strerror or e}") from e
    try:
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the flock


def write_atomic(path: Path, data: bytes, *, mode: int = 0o644) -> None:
    """Write `data` to `path` via a temporary file in the same directory and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_private(path: Path) -> None:
    """Refuse a key file that group or others may read or write, as ssh does."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise CaError(
            f"{path}: private key file has mode {mode:04o}, readable by group or others; "
            f"run `chmod 600 {path}` (and keep the directory private)"
        )


def read_private(path: Path) -> bytes:
    """The bytes of a private key file after the mode check; a clear error if it cannot be read."""
    try:
        check_private(path)
        return path.read_bytes()
    except OSError as e:
        raise CaError(f"{path}: cannot read the private key: {e.strerror or e}") from e
