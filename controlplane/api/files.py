"""Reading one policy file safely: regular files only, a size limit on the bytes actually read, UTF-8.

Shared by `controlplane validate` (api/loader.py) and the running server (policystore.py), so both
refuse the same files. Each refusal is a diagnostic for the file, never an exception:
- only regular files are opened: a FIFO named `x.yaml` would block the reader until something writes to
  it (the whole event loop, on main), a device such as a symlink to /dev/zero reports size 0 and never
  ends. Symlinks to regular files are followed (Kubernetes ConfigMap volumes are symlinks);
- the file is opened with O_NONBLOCK and checked again on the open descriptor (fstat), so a regular file
  swapped for a FIFO between the check and the open is not waited on either;
- the limit is checked on what is read (at most MAX_FILE_BYTES + 1 bytes), not on the size stat reports,
  which a growing file or a special file gets wrong.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

# Policy files are hand-written; anything bigger is a mistake (a log or a dump saved into the directory).
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Unreadable:
    """Why a file was not read (the message of its diagnostic)."""

    reason: str


def read_policy_file(path: str, limit: int = MAX_FILE_BYTES) -> str | Unreadable:
    """The file's text, or why it cannot be used as policy."""
    try:
        info = os.stat(path)
    except OSError as err:
        return Unreadable(f"cannot read file: {err.strerror}")
    if not stat.S_ISREG(info.st_mode):
        return Unreadable(f"cannot read file: not a regular file ({_file_type(info.st_mode)}); not opened")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as err:
        return Unreadable(f"cannot read file: {err.strerror}")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return Unreadable("cannot read file: not a regular file")
        data = _read_at_most(fd, limit + 1)
    except OSError as err:
        return Unreadable(f"cannot read file: {err.strerror}")
    finally:
        os.close(fd)
    if len(data) > limit:
        return Unreadable(f"cannot read file: too large (more than {limit} bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        return Unreadable(f"cannot read file: not valid UTF-8 (byte {err.start})")


def _read_at_most(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _file_type(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a file"
