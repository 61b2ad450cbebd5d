"""Where a result came from: the command, the code's commit, the machine and the date, with every
path relative to the repository, so a results file says where its inputs came from, not where it
ran (``/home/me/fer_robust/runs/x`` is recorded as ``runs/x``).

Every script that saves figures (``tools/benchmark.py``, ``benchmarks/*.py``) records
:func:`provenance` beside them. The module imports nothing from the package and nothing heavy at
module level (torch only inside :func:`machine_description`), so any module can use it.
"""
from __future__ import annotations

import datetime
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

__all__ = ["repo_root", "repo_relative", "command_line", "git_commit", "machine_description",
           "timestamp", "provenance"]


def repo_root() -> Path:
    """The repository's folder (the one holding the ``fer_robust`` package)."""
    return Path(__file__).resolve().parents[1]


def repo_relative(path: str | os.PathLike) -> str:
    """``path`` relative to the repository when it lies inside it (or beside it, like the shared
    data folder: ``../shared/data/ferplus``), so a results file says where its inputs came from,
    not where it ran; any other path as given."""
    root = repo_root()
    resolved = Path(path).expanduser().resolve()
    try:
        return resolved.relative_to(root).as_posix()
    except ValueError:
        pass
    try:
        resolved.relative_to(root.parent)
    except ValueError:
        return str(path)
    return Path(os.path.relpath(resolved, root)).as_posix()


def _relative_argument(arg: str) -> str:
    """A command-line argument with its path made repository-relative: the whole argument
    (``/work/x/runs/a``) or the value of a ``key=value`` one (``data.root=/work/x/data``)."""
    if arg.startswith(("/", "~")):
        return repo_relative(arg)
    key, sep, value = arg.partition("=")
    if sep and value.startswith(("/", "~")):
        return f"{key}={repo_relative(value)}"
    return arg


def command_line(script: str | os.PathLike, argv: Sequence[str] | None = None) -> str:
    """``python <script> <argv>`` as one shell line, the script and every path in the arguments
    relative to the repository; ``argv`` None means this process's own arguments."""
    args = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", repo_relative(script),
                       *(_relative_argument(str(a)) for a in args)])


def git_commit() -> str:
    """The repository's commit (``+ changes`` when the work tree differs from it), or
    ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo_root(),
                              capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=repo_root(), capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head} + changes" if dirty else head


def machine_description(cpu: bool = False, processes: int | None = None) -> str:
    """The machine in one line: processor, CPU cores, device (the GPU's name unless ``cpu``, or
    when there is none), processes, torch's version and its thread count now.

    ``processes`` defaults to the launcher's ``WORLD_SIZE`` (1 without one), so a script can
    describe the machine without starting accelerate's state."""
    import torch  # here, not at the top: the module stays importable without loading torch

    gpu = torch.cuda.is_available() and not cpu
    device = f"GPU {torch.cuda.get_device_name(0)}" if gpu else "CPU only"
    if processes is None:
        processes = int(os.environ.get("WORLD_SIZE", "1"))
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {device}, "
            f"{processes} process(es); torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")


def timestamp() -> str:
    """Now, to the minute: ``2026-12-07 04:28``."""
    return datetime.datetime.now().strftime("%Y-%m-%d %H:%M")


def provenance(argv: Sequence[str] | None, script: str | os.PathLike, cpu: bool = False,
               processes: int | None = None) -> dict[str, str]:
    """``{"command", "commit", "machine", "date"}`` of a result that ``script`` (its ``__file__``)
    computes, run with ``argv`` (None: this process's arguments): see :func:`command_line`,
    :func:`git_commit` and :func:`machine_description` (``cpu``: the script computes on the CPU
    whatever the machine holds). Call it once the script has set its thread count; the date is
    the call's."""
    return {"command": command_line(script, argv), "commit": git_commit(),
            "machine": machine_description(cpu, processes), "date": timestamp()}
