"""Files that only their owner may read: a private directory, a secret made once, a 0600 file.

For the embedded Redis' data directory, its password and its configuration. Every file is
created with its final mode (never created readable and narrowed after), and appears whole
under its name or not at all.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

SECRET_BYTES: Final = 32
"""Random bytes in a made secret (43 URL-safe characters)."""
_PRIVATE: Final = 0o077
"""Mode bits that must be clear: nothing for the group, nothing for others."""


class PrivateFileError(RuntimeError):
    """A private file or directory cannot be used as it is; the message says what to do."""


def private_dir(path: Path, what: str) -> str | None:
    """Make ``path`` exist as a directory of ours with mode 0700.

    Returns a note for the owner when an existing directory had to be made private; raises
    ``PrivateFileError`` if it belongs to someone else. ``what`` names it in messages.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.getuid():
        raise PrivateFileError(
            f"{what} {path} belongs to uid {info.st_uid}, not to you (uid {os.getuid()}): "
            "choose a directory of your own"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & _PRIVATE:
        path.chmod(0o700)
        return f"made {what} {path} private (mode 0700; it was {mode:04o})"
    return None


def write_private(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically, mode 0600 from its creation."""
    with _temporary_copy(path, text) as temporary:
        os.replace(temporary, path)


def secret_of(path: Path) -> str:
    """The secret kept in ``path``: made once (random, mode 0600), then read at every call.

    Raises ``PrivateFileError`` when the file can be read by others (the secret may be
    known: delete the file for a new one), belongs to someone else, or is empty.
    """
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    made = secrets.token_urlsafe(SECRET_BYTES) + "\n"
    # A hard link appears atomically, whole, and never replaces an existing secret: if
    # another process made one in the meantime, both use that one.
    with _temporary_copy(path, made) as temporary, contextlib.suppress(FileExistsError):
        os.link(temporary, path)
    return _read_secret(path)


@contextlib.contextmanager
def _temporary_copy(path: Path, text: str) -> Iterator[Path]:
    """A file beside ``path`` holding ``text`` on disk (fsync'd), mode 0600 from its creation.

    Yields its path, to be renamed or linked to ``path``; removed afterwards in any case.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        yield temporary
    finally:
        temporary.unlink(missing_ok=True)


def _read_secret(path: Path) -> str:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, encoding="utf-8") as stream:
        info = os.fstat(stream.fileno())
        if info.st_uid != os.getuid():
            raise PrivateFileError(
                f"{path} belongs to uid {info.st_uid}, not to you: delete it, and a new "
                "password is made at the next start"
            )
        mode = stat.S_IMODE(info.st_mode)
        if mode & _PRIVATE:
            raise PrivateFileError(
                f"{path} can be read by others (mode {mode:04o}), so its password may be "
                "known: delete it, and a new password is made at the next start"
            )
        secret = stream.read().strip()
    if not secret:
        raise PrivateFileError(f"{path} is empty: delete it, and a new one is made")
    return secret
