"""One comparison of a recorded FirecREST v2 response with hpcgate's answer to the same request.

Values are not compared (they are normalised away in the record), except the
texts of errors, which clients match on, and the values of :data:`COMPARED_VALUES`.
What must agree: the status, the
FirecREST headers, the media type, and the body's shape: the set of keys of
every object, recursively, including keys whose value is null, and the JSON
type of every value. Arrays are compared by the merged shape of their
elements, so that a list of another length (other jobs of the user) still
compares, while a key or type that only some elements have still counts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Keys hpcgate adds to FirecREST's objects, documented as hpcgate extensions in the .proto
# files: clients that do not know them ignore them.
EXTENSION_KEYS = frozenset({"normalizedState", "data_transfers"})

# hpcgate puts the google.rpc.Status details (reason, field violations) under an error
# body's ``data``, where FirecREST mostly sends null (README: "Calling it").
ERROR_EXTENSIONS = frozenset({"data"})


def json_type(value: Any) -> str:
    """The JSON type name of a decoded value (int and float are both "number")."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


@dataclass
class Shape:
    """The JSON types seen at one place of a document, and the shapes below it."""

    types: set[str] = field(default_factory=set)
    keys: dict[str, Shape] = field(default_factory=dict)
    items: Shape | None = None

    def add(self, value: Any) -> Shape:
        """Merge ``value`` into this shape (returns self)."""
        self.types.add(json_type(value))
        if isinstance(value, dict):
            for k, v in value.items():
                self.keys.setdefault(k, Shape()).add(v)
        elif isinstance(value, list):
            for item in value:
                if self.items is None:
                    self.items = Shape()
                self.items.add(item)
        return self


def shape_of(value: Any) -> Shape:
    """The shape of one JSON value."""
    return Shape().add(value)


def shape_differences(want: Shape, got: Shape, where: str) -> list[str]:
    """Where ``got`` differs from ``want``: types, missing and extra keys, element shapes."""
    out: list[str] = []
    if want.types != got.types:
        out.append(f"{where}: type {sorted(got.types)}, FirecREST {sorted(want.types)}")
    if "object" in want.types and "object" in got.types:
        for k in sorted(want.keys.keys() - got.keys.keys()):
            out.append(f"{where}.{k}: missing (FirecREST: {sorted(want.keys[k].types)})")
        for k in sorted(got.keys.keys() - want.keys.keys() - EXTENSION_KEYS):
            out.append(f"{where}.{k}: not in FirecREST's answer")
        for k in sorted(want.keys.keys() & got.keys.keys()):
            out += shape_differences(want.keys[k], got.keys[k], f"{where}.{k}")
    if want.items is not None and got.items is None and "array" in got.types:
        out.append(f"{where}: empty array, FirecREST's has elements")
    if want.items is not None and got.items is not None:
        out += shape_differences(want.items, got.items, f"{where}[]")
    return out


# Keys whose values must agree wherever both answers have them: a staged transfer's method,
# part size and presigned URLs (normalised to the S3 operation, part number and lifetime
# they are for), so that the number of parts and what each URL does are compared too.
COMPARED_VALUES = frozenset(
    {"transferMethod", "maxPartSize", "partsUploadUrls", "completeUploadUrl", "downloadUrl"}
)


def value_differences(want: Any, got: Any, where: str) -> list[str]:
    """Where a key of :data:`COMPARED_VALUES` has another value in ``got`` than in ``want``.

    Objects are walked key by key; arrays only element by element when both are as long
    (the shape comparison reports the rest).
    """
    out: list[str] = []
    if isinstance(want, dict) and isinstance(got, dict):
        for k in sorted(want.keys() & got.keys()):
            if k in COMPARED_VALUES and want[k] != got[k]:
                out.append(f"{where}.{k}: {got[k]!r}, FirecREST {want[k]!r}")
            else:
                out += value_differences(want[k], got[k], f"{where}.{k}")
    elif isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        for w, g in zip(want, got, strict=True):
            out += value_differences(w, g, f"{where}[]")
    return out


# FirecREST reports a failed command on the cluster as this prefix plus the command's stderr.
# hpcgate reads and writes files over SFTP, so there is no such command line to quote:
# what must agree is the error's reason, the last ": "-part of the first stderr line
# ("No such file or directory", "Permission denied", "File exists", ...), the words a
# client can match on.
REMOTE_FAILURE = re.compile(r"^Remote process failed with exit status:\d+ and error message:")


def messages_agree(got: str, want: str) -> bool:
    """Whether hpcgate's error text ``got`` says what FirecREST's ``want`` says (see above)."""
    if not REMOTE_FAILURE.match(want):
        return got == want

    def reason(text: str) -> str:
        return (text.splitlines() or [""])[0].rpartition(": ")[2]

    return reason(got) == reason(want)


def _is_error(body: Any) -> bool:
    return isinstance(body, dict) and "errorType" in body and "message" in body


def _is_text(body: Any) -> bool:
    return isinstance(body, dict) and "text" in body


def _strip_extensions(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in ERROR_EXTENSIONS}


def media_type(headers: dict[str, str]) -> str:
    return headers.get("content-type", "").partition(";")[0].strip().lower()


def differences(
    recorded: dict[str, Any], actual: dict[str, Any], *, texts: bool = True
) -> list[str]:
    """Every way ``actual`` (a normalised response) differs from ``recorded``; [] if none.

    ``texts=False`` leaves error messages uncompared: for an answer held against
    another operation's error (where hpcgate refuses what FirecREST serves).
    """
    out: list[str] = []
    if actual["status"] != recorded["status"]:
        out.append(f"status {actual['status']}, FirecREST {recorded['status']}")
    for name in recorded["headers"]:
        if name == "content-type" and recorded["body"] is None:
            continue
        if name not in actual["headers"]:
            out.append(f"header {name}: missing")
    # FirecREST labels its empty 204 bodies application/json; without a body there is no type.
    if recorded["body"] is not None and media_type(actual["headers"]) != media_type(
        recorded["headers"]
    ):
        out.append(
            f"content-type {media_type(actual['headers'])!r}, "
            f"FirecREST {media_type(recorded['headers'])!r}"
        )
    want, got = recorded["body"], actual["body"]
    if _is_error(want) and _is_error(got):
        # A validation message is FirecREST's pydantic dump (with its source lines): not a text
        # clients match on. Error messages are.
        if (
            texts
            and want["errorType"] == "error"
            and not messages_agree(got["message"], want["message"])
        ):
            out.append(f"message {got['message']!r}, FirecREST {want['message']!r}")
        if got["errorType"] != want["errorType"]:
            out.append(f"errorType {got['errorType']!r}, FirecREST {want['errorType']!r}")
        want, got = _strip_extensions(want), _strip_extensions(got)
    elif _is_text(want) and _is_text(got) and got["text"] != want["text"]:
        out.append(f"body text {got['text']!r}, FirecREST {want['text']!r}")
    out += shape_differences(shape_of(want), shape_of(got), "body")
    out += value_differences(want, got, "body")
    return out
