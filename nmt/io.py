"""Files written safely (RELIABILITY.md R1, R30, R31): atomic writes that keep the umask's mode,
names checked before they become paths, and paths checked to stay inside their folder."""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

#: what a language code, split name or other name taken from a config may look like (R30)
SAFE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class UnsafePath(ValueError):
    """A name or path would leave the folder it belongs in (``..``, ``/``, an absolute path)."""


def check_name(key: str, value: str) -> str:
    """``value`` when it matches :data:`SAFE_NAME` (letters, digits, ``_``, ``-``).

    Raises:
        UnsafePath: naming ``key`` and the value.
    """
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise UnsafePath(f"{key}={value!r}: expected letters, digits, '_' or '-' only (it becomes part of a file name)")
    return value


def inside(folder: str | os.PathLike, name: str | os.PathLike) -> Path:
    """``folder / name``, checked to stay inside ``folder`` once symlinks and ``..`` are resolved.

    Raises:
        UnsafePath: the result is not below ``folder``.
    """
    base = Path(folder).resolve()
    path = (base / name).resolve()
    if path == base or base not in path.parents:
        raise UnsafePath(f"{name!s} is not inside {base}: refusing to write there")
    return path


def is_within(path: str | os.PathLike, folder: str | os.PathLike) -> bool:
    """True when ``path`` is ``folder`` or lies below it (both resolved)."""
    p, f = Path(path).resolve(), Path(folder).resolve()
    return p == f or f in p.parents


def file_mode() -> int:
    """The mode a new file gets under this process's umask (0o666 & ~umask)."""
    try:  # Linux reports the umask without changing it (os.umask would, racing other threads)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def open_temp(path: str | os.PathLike, mode: str = "wb"):
    """``(file object, temp path)``: a new file beside ``path`` with a unique name, readable as a
    file created with ``open`` would be (mkstemp alone gives 0600, which locks teammates out)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, file_mode())
        return os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": "\n"})), tmp
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise


def fsync_dir(directory: str | os.PathLike) -> None:
    """fsync a directory so a rename inside it is durable (no-op where unsupported)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The file gets the mode ``open`` would give it under the umask (R1; a shared run stays readable).

    Raises:
        OSError: when the directory is not writable or the disk is full (the old file is kept).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    f, tmp = open_temp(path)
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """:func:`atomic_write_bytes` for UTF-8 text with ``\\n`` line endings."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def read_limited(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of ``path``, refused before reading when the file is larger than ``limit``
    (files from an untrusted folder, R30).

    Raises:
        OSError: unreadable; ValueError: larger than ``limit`` (names the file and both sizes).
    """
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise ValueError(f"{path} is {size:,} bytes, more than the {limit:,} such a file can hold")
        return f.read(limit + 1)[:limit]
