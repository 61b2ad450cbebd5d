"""Optional dependencies: import them where needed, and say which extra installs them."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["MissingExtraError", "require"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra that installs it."""


def require(module: str, extra: str, purpose: str, package: str | None = None) -> ModuleType:
    """``import module``, or raise :class:`MissingExtraError` saying
    ``"<purpose> needs <package> (pip install -e '.[<extra>]')"``."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{purpose} needs {package or module}, which is not installed: "
            f"pip install -e '.[{extra}]' ({e})") from None
