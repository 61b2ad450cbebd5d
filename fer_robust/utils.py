"""Small shared helpers: atomic file writes and seeding."""
from __future__ import annotations

import errno
import json
import math
import os
import random
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

__all__ = ["atomic_path", "atomic_write_text", "atomic_write_json", "atomic_save_npz", "seed_everything",
           "json_safe", "share_like_new_files", "refuse_file_in_the_way", "writable_folder"]


def _umask() -> int:
    """The process's file-creation mask (read by setting it, then restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, so a
    crash mid-write leaves the previous file intact. The file gets the permissions any new file
    gets (``0o666`` less the user's umask), not ``mkstemp``'s private ``0o600``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; give a file name to write to")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # After the write: some writers (safetensors) replace the file with a private one.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def refuse_file_in_the_way(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """``folder`` as a Path when it is, or can be made, a folder: a NotADirectoryError saying so
    when it is an existing file, or lies under one (``mkdir`` would fail with FileExistsError or
    NotADirectoryError, naming neither the setting nor the file in the way)."""
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        if path.exists() or path.is_symlink():
            where = "is a file" if path == folder else f"lies under {path}, which is a file"
            raise NotADirectoryError(f"{what} {folder} {where}, not a folder")
    return folder


def writable_folder(folder: str | os.PathLike, what: str = "output folder") -> Path:
    """``folder``, created if needed, once a file could be made in it; checked before a tool's
    work rather than when it writes the result. Raises NotADirectoryError (see
    :func:`refuse_file_in_the_way`) or PermissionError naming ``what`` and the folder."""
    folder = refuse_file_in_the_way(folder, what)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):  # O_TMPFILE where it exists: leaves no name
            pass
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        raise PermissionError(f"{what} {folder} is not writable ({e.strerror})") from None
    return folder


def share_like_new_files(folder: str | os.PathLike) -> None:
    """Give every file in ``folder`` the permissions a new file gets (``0o666`` less the umask):
    safetensors writes its files readable by their owner only."""
    mode = 0o666 & ~_umask()
    for f in Path(folder).iterdir():
        if f.is_file():
            os.chmod(f, mode)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def seed_everything(seed: int) -> None:
    import torch
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def register_in(table: dict, what: str, name: str,
                name_attribute: str | None = None) -> Callable[[Any], Any]:
    """Decorator that adds its target to ``table`` under ``name`` (the one way every registry of
    the package grows: datasets, noise kinds, models, stages, methods). A second ``name`` is an
    error that says which ``what`` (e.g. 'dataset') it is. With ``name_attribute`` the target (a
    class) also gets its registered name as that attribute (e.g. a stage's ``kind``)."""
    def decorator(obj: Any) -> Any:
        if name in table:
            raise ValueError(f"{what} {name!r} is already registered")
        if name_attribute is not None:
            setattr(obj, name_attribute, name)
        table[name] = obj
        return obj
    return decorator
