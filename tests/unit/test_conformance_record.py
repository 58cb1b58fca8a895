"""The golden record of FirecREST v2's answers was made from today's scenario."""

from __future__ import annotations

from conformance import scenario
from conformance.golden import RECORD, RECORDED


def test_record_matches_scenario() -> None:
    """The record was made from this scenario: same operations, same requests, in order."""
    assert [op["name"] for op in RECORD["operations"]] == [op.name for op in scenario.OPERATIONS]
    for op in scenario.OPERATIONS:
        assert RECORDED[op.name]["request"] == op.request(), op.name
    assert len(RECORD["firecrest"]["commit"]) == 40
