"""Pag0 for agents: three lines to send HTTP through the Pag0 proxy.

    import pag0
    http = pag0.client(proxy_url="http://envoy:10000", api_key="sk-...", requested_by="sales-bot")
    r = http.post("https://api.deepl.com/v2/translate", json=...,
                  extensions={"pag0": {"justification": "Q3 deck"}})

A held request (``202``) is waited for and replayed once approved; refusals raise typed
errors (:class:`BudgetExceeded`, :class:`EndpointBlocked`, :class:`ApprovalDenied`, ...).
"""

from __future__ import annotations

from typing import Any, Optional

import httpx

from .errors import (
    ApprovalDenied,
    ApprovalError,
    ApprovalExpired,
    ApprovalLookupFailed,
    ApprovalMismatch,
    ApprovalPending,
    ApprovalRequired,
    ApprovalTimeout,
    ApprovalUsed,
    AuthenticationFailed,
    BadRequestBody,
    BodyTooLarge,
    BudgetExceeded,
    CategoryNotAllowed,
    ControlPlaneUnavailable,
    EndpointBlocked,
    EndpointNotAllowed,
    MaxPerRequestExceeded,
    MissingApiKey,
    OutsideWorkingHours,
    Pag0Error,
    UnknownApiKey,
    error_from,
)
from .transport import ApprovalWait, AsyncPag0Transport, Pag0Transport, Pending

# Equals the Cargo workspace version and pyproject.toml (checked by envoy/tests/clients.rs).
__version__ = "0.1.0"

__all__ = [
    "ApprovalDenied",
    "ApprovalError",
    "ApprovalExpired",
    "ApprovalLookupFailed",
    "ApprovalMismatch",
    "ApprovalPending",
    "ApprovalRequired",
    "ApprovalTimeout",
    "ApprovalUsed",
    "ApprovalWait",
    "AsyncPag0Transport",
    "AuthenticationFailed",
    "BadRequestBody",
    "BodyTooLarge",
    "BudgetExceeded",
    "CategoryNotAllowed",
    "ControlPlaneUnavailable",
    "EndpointBlocked",
    "EndpointNotAllowed",
    "MaxPerRequestExceeded",
    "MissingApiKey",
    "OutsideWorkingHours",
    "Pag0Error",
    "Pag0Transport",
    "Pending",
    "UnknownApiKey",
    "async_client",
    "client",
    "error_from",
]


def client(
    *, api_key: str, proxy_url: Optional[str] = None, httpx_module: Any = httpx, **options: Any
) -> Any:
    """An ``httpx.Client`` (or ``httpx_module.Client``, e.g. ``httpx2`` for openai >= 3) whose
    transport is :class:`Pag0Transport`. ``options``: ``justification``, ``requested_by``,
    ``requires_approval``, ``wait`` (:class:`ApprovalWait`), ``on_pending``; anything else goes
    to the ``Client`` (``timeout``, ``headers``, ...)."""
    mine = {k: options.pop(k) for k in list(options) if k in _TRANSPORT_OPTIONS}
    inner = httpx_module.HTTPTransport()
    transport = Pag0Transport(api_key=api_key, proxy_url=proxy_url, inner=inner, **mine)
    return httpx_module.Client(transport=transport, **options)


def async_client(
    *, api_key: str, proxy_url: Optional[str] = None, httpx_module: Any = httpx, **options: Any
) -> Any:
    """Like :func:`client`, an ``AsyncClient`` with :class:`AsyncPag0Transport`."""
    mine = {k: options.pop(k) for k in list(options) if k in _TRANSPORT_OPTIONS}
    inner = httpx_module.AsyncHTTPTransport()
    transport = AsyncPag0Transport(api_key=api_key, proxy_url=proxy_url, inner=inner, **mine)
    return httpx_module.AsyncClient(transport=transport, **options)


_TRANSPORT_OPTIONS = ("justification", "requested_by", "requires_approval", "wait", "on_pending")
