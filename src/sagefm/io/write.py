"""Writing AnnData without ever leaving a half-written file."""

from __future__ import annotations

import os
import tempfile
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


def write_h5ad(adata: ad.AnnData, path: Path) -> Path:
    """Write ``adata`` to a temporary file beside ``path`` and rename it into place (atomic)."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        adata.write_h5ad(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc}") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
