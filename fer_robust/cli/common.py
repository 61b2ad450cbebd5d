"""What every command-line tool shares: turning known errors into one clear line and exit code 2.

This module imports nothing heavy, so a tool that never loads torch (``tools/predict.py --onnx``)
can use it: the error types of the package are looked up among the modules already imported (an
error of a type whose module was never imported cannot have been raised).
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

__all__ = ["user_errors_exit", "user_error_types", "repo_root"]

# (module, class) of every error a tool reports as a user error; FileNotFoundError too.
_USER_ERRORS = (
    ("fer_robust.config", "ConfigError"),
    ("fer_robust.data.base", "DatasetFormatError"),
    ("fer_robust.engine.checkpoint", "CheckpointError"),
    ("fer_robust.engine.trainer", "RunDirError"),
    ("fer_robust.engine.trainer", "NonFiniteLossError"),
    ("fer_robust.deploy.extras", "MissingExtraError"),
)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The user-error types of the modules imported so far, and FileNotFoundError."""
    found: list[type[BaseException]] = [FileNotFoundError]
    for module, name in _USER_ERRORS:
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


@contextmanager
def user_errors_exit(tool: str) -> Iterator[None]:
    """Print ``<tool>: error: <message>`` and exit 2 for input errors (no traceback)."""
    try:
        yield
    except Exception as e:
        if not isinstance(e, user_error_types()):
            raise
        print(f"{tool}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]
