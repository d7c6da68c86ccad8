#!/usr/bin/env python3
"""Upstream GPT-NeoX's name for inspect_checkpoint.py (same flags); see that script."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inspect_checkpoint import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
