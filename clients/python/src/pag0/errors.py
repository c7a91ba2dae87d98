"""Typed refusals: one exception class per SPEC §5 wire code (`x-pag0-code`)."""

from __future__ import annotations

import json
from typing import Any, Dict, Optional, Type


class Pag0Error(Exception):
    """A request Pag0 refused (or an approval that could not be used).

    ``code`` is the wire code (``BUDGET_EXCEEDED``, ...), ``status`` the HTTP status of the
    refusal (``None`` when raised by the helper itself, e.g. :class:`ApprovalTimeout`),
    ``scope`` the budget that lacked room (``project.monthly``, ...), ``project_id`` the
    project, ``approval_id`` the approval involved, ``body`` the parsed JSON body.
    """

    code: str = "PAG0_ERROR"

    def __init__(
        self,
        message: str,
        *,
        code: Optional[str] = None,
        status: Optional[int] = None,
        scope: Optional[str] = None,
        project_id: Optional[str] = None,
        approval_id: Optional[str] = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.status = status
        self.scope = scope
        self.project_id = project_id
        self.approval_id = approval_id
        self.body = body

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AuthenticationFailed(Pag0Error):
    """``MISSING_API_KEY`` / ``UNKNOWN_API_KEY`` (401)."""


class MissingApiKey(AuthenticationFailed):
    code = "MISSING_API_KEY"


class UnknownApiKey(AuthenticationFailed):
    code = "UNKNOWN_API_KEY"


class EndpointBlocked(Pag0Error):
    code = "ENDPOINT_BLOCKED"


class EndpointNotAllowed(Pag0Error):
    code = "ENDPOINT_NOT_ALLOWED"


class CategoryNotAllowed(Pag0Error):
    code = "CATEGORY_NOT_ALLOWED"


class OutsideWorkingHours(Pag0Error):
    code = "OUTSIDE_WORKING_HOURS"


class MaxPerRequestExceeded(Pag0Error):
    code = "MAX_PER_REQUEST_EXCEEDED"


class BudgetExceeded(Pag0Error):
    """402: a budget lacks room for the estimate; ``scope`` names which."""

    code = "BUDGET_EXCEEDED"


class ApprovalError(Pag0Error):
    """An approval that cannot be used for the replay."""


class ApprovalDenied(ApprovalError):
    code = "APPROVAL_DENIED"


class ApprovalExpired(ApprovalError):
    code = "APPROVAL_EXPIRED"


class ApprovalMismatch(ApprovalError):
    code = "APPROVAL_MISMATCH"


class ApprovalUsed(ApprovalError):
    code = "APPROVAL_USED"


class ApprovalPending(ApprovalError):
    code = "APPROVAL_PENDING"


class ApprovalRequired(ApprovalError):
    """Standalone mode: the request needs approval and there is no approval store."""

    code = "APPROVAL_REQUIRED"


class ApprovalTimeout(ApprovalError):
    """Nobody decided before the helper's deadline; the approval stays pending on the sidecar."""

    code = "APPROVAL_TIMEOUT"


class ApprovalLookupFailed(ApprovalError):
    """The approval status could not be read (unknown id, key not accepted, no route)."""

    code = "APPROVAL_LOOKUP_FAILED"


class ControlPlaneUnavailable(Pag0Error):
    code = "CONTROL_PLANE_UNAVAILABLE"


class BodyTooLarge(Pag0Error):
    code = "BODY_TOO_LARGE"


class BadRequestBody(Pag0Error):
    code = "BAD_REQUEST_BODY"


BY_CODE: Dict[str, Type[Pag0Error]] = {
    c.code: c
    for c in (
        MissingApiKey,
        UnknownApiKey,
        EndpointBlocked,
        EndpointNotAllowed,
        CategoryNotAllowed,
        OutsideWorkingHours,
        MaxPerRequestExceeded,
        BudgetExceeded,
        ApprovalDenied,
        ApprovalExpired,
        ApprovalMismatch,
        ApprovalUsed,
        ApprovalPending,
        ApprovalRequired,
        ControlPlaneUnavailable,
        BodyTooLarge,
        BadRequestBody,
    )
}


def is_refusal(status: int, headers: Any) -> bool:
    """A local reply of the filter: ``x-pag0-decision: deny`` (upstream errors are not)."""
    return status >= 400 and headers.get("x-pag0-decision", "").lower() == "deny"


def error_from(status: int, headers: Any, content: bytes) -> Pag0Error:
    """The typed exception for a refusal (status, headers, body bytes).

    An unknown code still gives a :class:`Pag0Error` carrying it, so a newer filter's code is
    never lost.
    """
    body: Any = None
    err: Dict[str, Any] = {}
    try:
        body = json.loads(content.decode("utf-8")) if content else None
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
    except (UnicodeDecodeError, ValueError):
        body = None
    code = str(err.get("code") or headers.get("x-pag0-code") or "PAG0_ERROR")
    message = str(err.get("message") or f"refused by pag0 ({status} {code})")
    cls = BY_CODE.get(code, Pag0Error)
    return cls(
        message,
        code=code,
        status=status,
        scope=err.get("scope"),
        project_id=err.get("projectId") or headers.get("x-pag0-project"),
        approval_id=err.get("approvalId") or headers.get("x-pag0-approval-id"),
        body=body,
    )
