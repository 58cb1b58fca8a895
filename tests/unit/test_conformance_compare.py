"""The comparison itself: that it sees what the conformance tests rely on it to see."""

from __future__ import annotations

from typing import Any

from conformance.compare import differences

JSON = {"content-type": "application/json", "f7t-appversion": "2.x.x"}


def answer(body: Any, status: int = 200, headers: dict[str, str] = JSON) -> dict[str, Any]:
    return {"status": status, "headers": headers, "body": body}


RECORDED = answer({"output": [{"name": "a", "linkTarget": None, "size": "4"}]})


def test_same_shape_agrees() -> None:
    other_values = answer({"output": [{"name": "b", "linkTarget": None, "size": "99"}]})
    assert differences(RECORDED, other_values) == []


def test_missing_null_key_wrong_type_and_extra_key_are_seen() -> None:
    got = answer({"output": [{"name": "a", "size": 4, "inode": 7}]})
    assert differences(RECORDED, got) == [
        "body.output[].linkTarget: missing (FirecREST: ['null'])",
        "body.output[].inode: not in FirecREST's answer",
        "body.output[].size: type ['number'], FirecREST ['string']",
    ]


def test_an_element_only_some_have_counts() -> None:
    recorded = answer({"output": [{"linkTarget": None}, {"linkTarget": "x"}]})
    assert differences(recorded, answer({"output": [{"linkTarget": "x"}]})) == [
        "body.output[].linkTarget: type ['string'], FirecREST ['null', 'string']"
    ]


def test_status_headers_and_error_texts_are_seen() -> None:
    recorded = answer({"errorType": "error", "message": "Job not found."}, 404)
    got = answer(
        {"errorType": "error", "message": "job 7 not found", "data": {"reason": "X"}},
        500,
        {"content-type": "text/plain"},
    )
    assert differences(recorded, got) == [
        "status 500, FirecREST 404",
        "header f7t-appversion: missing",
        "content-type 'text/plain', FirecREST 'application/json'",
        "message 'job 7 not found', FirecREST 'Job not found.'",
    ]
    assert not [d for d in differences(recorded, got, texts=False) if d.startswith("message")]


def test_a_failed_command_agrees_on_its_reason() -> None:
    prefix = "Remote process failed with exit status:1 and error message:"
    recorded = answer(
        {"errorType": "error", "message": prefix + "rm: cannot remove 'x': Not a directory"}, 404
    )
    assert (
        differences(recorded, answer({"errorType": "error", "message": "x: Not a directory"}, 404))
        == []
    )
    assert differences(
        recorded, answer({"errorType": "error", "message": "x: Permission denied"}, 404)
    ) == [
        "message 'x: Permission denied', FirecREST "
        f"\"{prefix}rm: cannot remove 'x': Not a directory\""
    ]
