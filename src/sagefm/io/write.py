"""Writing AnnData without ever leaving a half-written file."""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anndata as ad

from sagefm.errors import OutputError


def check_writable(path: Path) -> Path:
    """Fail early (before long work) when ``path`` cannot be written: its folder is created if needed."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path} is a directory; give a file name such as {path / 'out.h5ad'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder for {path}: {exc}") from exc
    if not os.access(path.parent, os.W_OK):
        raise OutputError(f"cannot write to {path.parent}: permission denied")
    return path


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends.

    A process killed while writing leaves ``path`` as it was (the previous file, or none) plus at
    most a hidden ``.<name>.*.tmp`` file; an error inside the block removes the temporary file.
    """
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as handle:  # on disk before the rename: a crash cannot swap in
            os.fsync(handle.fileno())  # an empty file
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_h5ad(adata: ad.AnnData, path: Path) -> Path:
    """Write ``adata`` to a temporary file beside ``path`` and rename it into place (atomic)."""
    with atomic_path(Path(path)) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)


def write_text_atomic(path: Path, text: str) -> Path:
    """Write a text file (JSON, CSV, a report) atomically, as `write_h5ad`."""
    with atomic_path(Path(path)) as tmp:
        tmp.write_text(text)
    return Path(path)


@contextmanager
def staged_directory(directory: Path) -> Iterator[Path]:
    """Yield an empty staging folder beside ``directory``; on success rename it to ``directory``.

    An existing ``directory`` is kept until the new one is in place (`_swap_into_place`), and an
    exception inside the block removes the staging folder, so readers only ever see a complete old
    or new directory.
    """
    directory = Path(directory)
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    except OSError as exc:
        raise OutputError(f"cannot write {directory}: {exc}") from exc
    try:
        yield staging
        _swap_into_place(staging, directory)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"cannot write {directory}: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


#: ``renameat2`` arguments (linux/fcntl.h, linux/fs.h): paths relative to the working directory,
#: and swap the two paths in one step
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux ``renameat2`` with ``RENAME_EXCHANGE``,
    glibc >= 2.28). False where the platform, C library or file system cannot; raises `OSError`
    on any other failure."""
    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def _swap_into_place(staging: Path, directory: Path) -> None:
    """Rename ``staging`` to ``directory``. An existing directory is swapped with it in one step
    where the system can (so ``directory`` exists at every instant, even if the process is killed),
    else moved aside first (then a kill between the two renames leaves it only under
    ``.{name}.old-*``); either way the old one is deleted afterwards."""
    if not directory.exists():
        os.replace(staging, directory)
        return
    if _exchange(staging, directory):
        shutil.rmtree(staging, ignore_errors=True)  # it now holds the old directory
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}.old-", dir=directory.parent))
    retired.rmdir()
    os.replace(directory, retired)
    os.replace(staging, directory)
    shutil.rmtree(retired, ignore_errors=True)
