"""What every command-line tool shares: turning known errors into one clear line and exit code 2.

Each tool's ``main(argv)`` returns its result (for tests and callers); :func:`tool_entry` wraps it
as the process entry point (``tools/*.py`` and the console scripts), whose exit status is 0 on
success, 2 on a user error and 130 on Ctrl-C (one line too, saying where a run can be resumed when
the tool re-raises the KeyboardInterrupt with that as its message).

This module imports nothing heavy, so a tool that never loads torch (``tools/predict.py --onnx``)
can use it: the error types of the package are looked up among the modules already imported (an
error of a type whose module was never imported cannot have been raised).
"""
from __future__ import annotations

import errno
import re
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from fer_robust.provenance import repo_root

__all__ = ["user_errors_exit", "user_error_types", "one_line", "tool_entry", "repo_root"]

# (module, class) of every error a tool reports as a user error.
_USER_ERRORS = (
    ("fer_robust.config", "ConfigError"),
    ("fer_robust.data.base", "DatasetFormatError"),
    ("fer_robust.engine.checkpoint", "CheckpointError"),
    ("fer_robust.models.weights", "PretrainedFileError"),
    ("fer_robust.engine.run_dir", "RunDirError"),
    ("fer_robust.engine.trainer", "NonFiniteLossError"),
    ("fer_robust.deploy.extras", "MissingExtraError"),
)

# torch re-raises an error from a DataLoader worker as the same class with the worker's whole
# traceback as its message; its last line is "<module>.<Class>: <the original message>".
_WORKER_TRACEBACK = "\nOriginal Traceback (most recent call last):"


# A full disk or quota: the machine's state, not the program's fault.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def user_error_types() -> tuple[type[BaseException], ...]:
    """The user-error types of the modules imported so far, and the operating system's errors
    about paths: a missing file, a folder or a file where the other was expected, no
    permission."""
    found: list[type[BaseException]] = [FileNotFoundError, IsADirectoryError, NotADirectoryError,
                                        PermissionError]
    for module, name in _USER_ERRORS:
        if module in sys.modules:
            found.append(getattr(sys.modules[module], name))
    return tuple(found)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line: for an error re-raised from a DataLoader worker, the
    original message (not the worker's traceback); other line breaks become '; '."""
    message = str(error)
    if _WORKER_TRACEBACK in message:
        last = [line for line in message.splitlines() if line.strip()][-1]
        message = re.sub(r"^[\w.]+(Error|Exception): ", "", last.strip())
    return "; ".join(line.strip() for line in message.splitlines() if line.strip())


@contextmanager
def user_errors_exit(tool: str) -> Iterator[None]:
    """Print ``<tool>: error: <message>`` on one line and exit 2 for input errors and a full disk
    (no traceback); on Ctrl-C print ``<tool>: interrupted`` (with the KeyboardInterrupt's message,
    where the tool gave one) and exit 130, as a shell reports a process that SIGINT ended."""
    try:
        yield
    except KeyboardInterrupt as e:
        where = f"; {one_line(e)}" if str(e) else ""
        print(f"{tool}: interrupted{where}", file=sys.stderr)
        raise SystemExit(130) from None
    except Exception as e:
        no_space = isinstance(e, OSError) and e.errno in _NO_SPACE
        if not (no_space or isinstance(e, user_error_types())):
            raise
        print(f"{tool}: error: {one_line(e)}", file=sys.stderr)
        raise SystemExit(2) from None


def tool_entry(main: Callable[..., Any]) -> Callable[[], int]:
    """The process entry point of a tool whose ``main(argv=None)`` returns its result: exit
    status 0 when ``main`` returns; a user error exits 2 from inside ``main``. (A console script
    calls ``sys.exit(entry())``: handing it ``main``'s dict would print it and exit 1.)"""
    def entry() -> int:
        main()
        return 0
    entry.__doc__ = f"Run {main.__module__}.main and return the exit status."
    return entry

