"""What every command-line tool shares: turning known errors into one clear line and exit code 2."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fer_robust.config import ConfigError
from fer_robust.data.base import DatasetFormatError
from fer_robust.engine.checkpoint import CheckpointError

__all__ = ["user_errors_exit", "USER_ERRORS", "repo_root"]

USER_ERRORS = (ConfigError, DatasetFormatError, CheckpointError, FileNotFoundError)


@contextmanager
def user_errors_exit(tool: str) -> Iterator[None]:
    """Print ``<tool>: error: <message>`` and exit 2 for input errors (no traceback)."""
    from fer_robust.engine.trainer import NonFiniteLossError, RunDirError
    try:
        yield
    except (*USER_ERRORS, RunDirError, NonFiniteLossError) as e:
        print(f"{tool}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
