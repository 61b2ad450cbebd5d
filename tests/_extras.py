"""Optional extras in tests: a module an extra installs, skipped where it is absent."""
import os

import pytest


def require_extra(module: str, extra: str):
    """``module``; where CI runs (which installs every extra) a missing one fails, elsewhere the
    test module skips, naming the extra that installs it."""
    if os.environ.get("CI"):
        return __import__(module)
    return pytest.importorskip(module, reason=f"{module} missing: pip install -e '.[{extra}]'")
