"""The edge's OpenAPI document, built from the contracts alone (no service running)."""

from __future__ import annotations

import re

from hpcgate.edge.bindings import bindings_of, hpcgate_services, is_required
from hpcgate.edge.openapi import decimal_at_most, openapi_document


def test_every_required_field_is_required_in_the_document() -> None:
    """REQUIRED in the contract is required in the document: parameter or body."""
    bindings = bindings_of(hpcgate_services())
    document = openapi_document(bindings)
    checked = 0
    for binding in bindings:
        operation = document["paths"][binding.route_path][binding.verb.lower()]
        parameters = {p["name"]: p for p in operation["parameters"]}
        body = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
        for field in binding.method.input_type.fields:
            if not is_required(field):
                continue
            checked += 1
            if field.name in binding.path_fields:
                assert parameters[field.name]["required"], (binding.template, field.name)
            elif field.json_name in parameters:
                assert parameters[field.json_name]["required"], (binding.template, field.name)
            else:
                assert field.json_name in body["schema"]["required"], (binding.template, field.name)
    assert checked > 30


def test_integers_as_strings_are_bounded_by_their_type() -> None:
    pattern = re.compile(decimal_at_most(2**32 - 1))
    assert pattern.match("4294967295") and pattern.match("0") and pattern.match("007")
    assert not pattern.match("4294967296") and not pattern.match("4592124348")
    for limit in (0, 1, 9, 10, 305, 1000):
        small = re.compile(decimal_at_most(limit))
        assert [n for n in range(limit * 3 + 20) if small.match(str(n))] == list(range(limit + 1))


def test_optional_fields_admit_null_and_bodies_no_unknown_fields() -> None:
    document = openapi_document(bindings_of(hpcgate_services()))
    link = document["components"]["schemas"]["File"]["properties"]["linkTarget"]
    assert link["type"] == ["string", "null"]
    body = document["paths"]["/filesystem/{system_name}/ops/mkdir"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["additionalProperties"] is False
