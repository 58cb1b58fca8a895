"""hpcgate's benchmark harness (``make bench``; see bench/README.md).

The harness reuses how ``make run`` starts the service (dev/run.py and
dev/localsite.py), so those scripts' folder goes on the import path here,
before any submodule imports them.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_DEV = str(ROOT / "dev")
if _DEV not in sys.path:
    sys.path.insert(0, _DEV)
