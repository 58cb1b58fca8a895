"""The comparison itself: that it sees what the conformance tests rely on it to see."""

from __future__ import annotations

from typing import Any

from conformance.compare import differences
from conformance.drive import Context, normalise

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


def _presigned(key: str, query: str) -> str:
    return f"http://127.0.0.1:9000/hpcgate-alice/{key}?{query}&X-Amz-Signature=ab12"


def test_a_presigned_url_keeps_its_operation_part_and_lifetime() -> None:
    ctx = Context.fresh("cluster", "alice")
    url = _presigned(
        "0c1f6e2a-1d2b-4c3d-8e4f-5a6b7c8d9e0f/data.txt",
        "uploadId=Zx9&partNumber=2&X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=testing%2F20261202%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20261202T185122Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host",
    )
    assert normalise({"downloadUrl": url}, ctx) == {
        "downloadUrl": "{s3}/{bucket}/{uuid}/data.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential={volatile}&X-Amz-Date={volatile}&X-Amz-Expires=3600"
        "&X-Amz-Signature={volatile}&X-Amz-SignedHeaders=host&partNumber=2&uploadId={volatile}"
    }


def test_staged_transfer_values_are_compared() -> None:
    ctx = Context.fresh("cluster", "alice")

    def directives(parts: int, size: int) -> dict[str, Any]:
        urls = [_presigned("k", f"partNumber={n}&uploadId=u") for n in range(1, parts + 1)]
        body = {"transferMethod": "s3", "partsUploadUrls": urls, "maxPartSize": size}
        return answer(normalise({"transferDirectives": body}, ctx), 201)

    recorded = directives(3, 1024)
    assert differences(recorded, directives(3, 1024)) == []
    found = differences(recorded, directives(2, 2048))
    assert [d.partition(":")[0] for d in found] == [
        "body.transferDirectives.maxPartSize",
        "body.transferDirectives.partsUploadUrls",
    ]
