"""The golden record: FirecREST v2's answers to the scenario, as ``record.py`` made them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RECORD_FILE = Path(__file__).with_name("firecrest-v2-record.json")
RECORD: dict[str, Any] = json.loads(RECORD_FILE.read_text())
# The recorded operations by name: each with its request and FirecREST's response.
RECORDED: dict[str, dict[str, Any]] = {op["name"]: op for op in RECORD["operations"]}
