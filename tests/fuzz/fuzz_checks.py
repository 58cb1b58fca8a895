"""Schemathesis's "schema-valid request accepted" check, with the refusals it cannot judge.

``positive_data_acceptance`` fails a schema-valid request the server
answers 400. Two kinds of such answers are right, and this module lets
exactly those through, so the check still holds for everything else:

- the request is well formed, but the cluster's state refuses it (the
  target exists, is not a directory, the job is not running). FirecREST
  answers these 400, and the conformance record holds the edge to it;
- the operation has a rule across fields that its OpenAPI document cannot
  state (query parameters cannot exclude each other), listed per operation.
"""

from __future__ import annotations

from typing import Any

from schemathesis import Case, CheckContext
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import positive_data_acceptance

# Refusals for the state of the files or the job, not for the request's form.
STATE_REASONS = frozenset(
    {
        "ALREADY_EXISTS",
        "NOT_A_DIRECTORY",
        "IS_A_DIRECTORY",
        "DIRECTORY_NOT_EMPTY",
        "SYMLINK_LOOP",
        "TAR_FAILED",
        "NOT_A_REGULAR_FILE",
        "JOB_NOT_RUNNING",
        # A user or group the system does not know.
        "INVALID_OWNER",
        # A transfer method this system is not configured with.
        "TRANSFER_METHOD_UNAVAILABLE",
        # The scheduler's configuration refuses the job (an unknown feature, partition).
        "JOB_REJECTED",
    }
)

# Per operation, the field violations of a rule across fields the document cannot state.
CROSS_FIELD_RULES: dict[tuple[str, str], frozenset[str]] = {
    # FirecREST's rule: `bytes` and `lines` exclude each other (query parameters cannot say so).
    # and skipping the trailing (heading) part needs one of them.
    ("GET", "/filesystem/{system_name}/ops/head"): frozenset({"bytes", "skipTrailing"}),
    ("GET", "/filesystem/{system_name}/ops/tail"): frozenset({"bytes", "skipHeading"}),
    # The largest view is the site's configuration, not the contract's.
    ("GET", "/filesystem/{system_name}/ops/view"): frozenset({"size"}),
    # Exactly one of script and scriptPath: a contract's oneof cannot be REQUIRED.
    ("POST", "/compute/{system_name}/jobs"): frozenset({"job.script"}),
    # An owner, a group or both: each is optional, but not both absent.
    ("PUT", "/filesystem/{system_name}/ops/chown"): frozenset({"owner"}),
    # The directives message is shared with downloads, which need no size.
    ("POST", "/filesystem/{system_name}/transfer/upload"): frozenset(
        {"transferDirectives.fileSize"}
    ),
}


def _refusal(response: Response) -> tuple[str, frozenset[str]]:
    """The error reason and the fields it names, from FirecREST's error body."""
    try:
        data = response.json().get("data") or {}
    except (ValueError, AttributeError):
        return "", frozenset()
    violations = data.get("fieldViolations") or []
    return str(data.get("reason", "")), frozenset(str(v.get("field")) for v in violations)


def valid_requests_accepted(ctx: CheckContext, response: Response, case: Case[Any]) -> bool | None:
    """``positive_data_acceptance``, but for refusals by state or by a cross-field rule."""
    if response.status_code == 400:
        reason, fields = _refusal(response)
        rule = CROSS_FIELD_RULES.get((case.method.upper(), case.operation.path), frozenset())
        if reason in STATE_REASONS or (fields and fields <= rule):
            return None
    result: bool | None = positive_data_acceptance(ctx, response, case)
    return result
