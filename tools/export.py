#!/usr/bin/env python
"""Entry point: see fer_robust/cli/export.py."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_robust.cli.export import entry_point  # noqa: E402

if __name__ == "__main__":
    sys.exit(entry_point())
