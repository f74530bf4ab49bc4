"""Makes `tests/http_client.py` importable from both suites (they have no __init__)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
