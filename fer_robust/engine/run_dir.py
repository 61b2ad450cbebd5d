"""The run directory: a folder a run may write into, and one run writing into it at a time.

Two trainings started into one ``output_dir`` would interleave their checkpoints, metrics lines and
best models without a word. So a run holds its folder: :func:`hold_run_dir` takes an exclusive
``flock`` on ``<output_dir>/.lock`` before the run writes anything there and records the holder's
process id, host and start time in it; :meth:`RunDirLock.release` removes it when the run ends
(the trainer releases it however ``fit`` ends). A second run is refused in one line that names the
folder and the process holding it.

A run killed outright (SIGKILL, a lost node) leaves its lock file behind, but the kernel drops a
``flock`` with its process, so that file is stale and the next run, or ``--resume``, takes it over.
On a file system without ``flock`` (some network mounts) the recorded process is asked instead
(``os.kill(pid, 0)``), when it ran on this host.

Nothing here imports torch: the checks run before anything heavy is loaded.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: the process check below stands alone
    fcntl = None

from fer_robust.utils import refuse_file_in_the_way

__all__ = ["RUN_LOCK", "RunDirError", "RunDirLock", "check_output_dir", "hold_run_dir"]

RUN_LOCK = ".lock"
# What flock raises where the file system has no locks; the recorded process is asked instead.
_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)


class RunDirError(RuntimeError):
    """The run directory cannot be used: it already holds a run (and ``--resume`` was not given) or
    lacks one, another process trains in it, or it is not a folder a run can write into."""


def check_output_dir(output_dir: str | os.PathLike) -> Path:
    """``output_dir`` as a Path when a run may be written there; refused when it is empty (the
    current directory would fill with a run's files), a file, or under a file."""
    if not str(output_dir).strip():
        raise RunDirError("'output_dir' is empty: the run would be written into the current "
                          "directory; set output_dir=runs/<name>")
    try:
        return refuse_file_in_the_way(output_dir, "output_dir")
    except NotADirectoryError as e:
        raise RunDirError(str(e)) from None


class RunDirLock:
    """One process's hold on a run directory (:func:`hold_run_dir`); :meth:`release` ends it."""

    def __init__(self, path: Path, fd: int, created: list[Path]):
        self.path = path
        self._fd: int | None = fd
        self._created = created  # folders the hold made, deepest first

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file, and the folders the hold made if they are still empty (a run
        refused before it wrote anything leaves nothing behind)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(self._fd)  # drops the flock
            self._fd = None
        _remove_empty(self._created)

    def __enter__(self) -> "RunDirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def hold_run_dir(output_dir: str | os.PathLike) -> RunDirLock:
    """Hold ``output_dir`` for this process (made if needed): the first thing a run writes there.

    Raises:
        RunDirError: ``output_dir`` is refused by :func:`check_output_dir`, cannot be made or
            written, or another live process holds it (named by its id, host and start time).
    """
    run_dir = check_output_dir(output_dir)
    created = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return _take(run_dir / RUN_LOCK, created)
    except OSError as e:
        _remove_empty(created)
        raise RunDirError(f"cannot write in output_dir {run_dir}: {e.strerror}") from None
    except BaseException:
        _remove_empty(created)
        raise


def _take(path: Path, created: list[Path]) -> RunDirLock:
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            holder = _holder_if_locked(fd)
        except BaseException:
            os.close(fd)
            raise
        if holder is not None:
            os.close(fd)
            raise RunDirError(f"output_dir {path.parent} is in use by another run ({holder}); wait "
                              "for it to end, or choose another output_dir (if that process is "
                              f"gone, remove {path})")
        if _same_file(fd, path):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
            return RunDirLock(path, fd, created)
        os.close(fd)  # its holder removed the file as we opened it: open the new one
    raise RunDirError(f"cannot hold output_dir {path.parent}: its lock file {path} keeps being "
                      "replaced")


def _holder_if_locked(fd: int) -> str | None:
    """Lock ``fd``; None when taken, else who holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return None
        except BlockingIOError:
            return _describe(_record(fd))
        except OSError as e:
            if e.errno not in _NO_FLOCK:
                raise
    record = _record(fd)
    pid = record.get("pid")
    if (isinstance(pid, int) and pid != os.getpid() and record.get("host") == socket.gethostname()
            and _alive(pid)):
        return _describe(record)
    return None  # no holder, or a stale record of a process that is gone


def _record(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _describe(record: dict) -> str:
    if "pid" not in record:
        return "a process that has just started"
    return (f"process {record['pid']} on {record.get('host', '?')}, started "
            f"{record.get('started', '?')}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return
