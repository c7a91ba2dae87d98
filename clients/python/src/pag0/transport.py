"""httpx transports that speak Pag0's wire protocol (SPEC §5) for an agent.

The transport wraps another transport (``httpx.HTTPTransport`` by default) and, per request:

1. sends it to the Pag0 proxy (Envoy) when ``proxy_url`` is set, keeping the original host as
   the ``Host`` header (the filter prices by host), with ``x-pag0-api-key`` and the optional
   ``x-pag0-justification`` / ``x-pag0-requested-by`` / ``x-pag0-requires-approval``;
2. on ``202`` + ``x-pag0-approval-id``: polls ``GET {proxy}/pag0/approvals/{id}`` with the
   agent's own key (exponential backoff, overall deadline) until an approver decides, then
   replays the same request once with ``x-pag0-approval-id`` and returns that answer;
3. turns every refusal of the filter (``x-pag0-decision: deny``) into a typed
   :class:`pag0.errors.Pag0Error`; every other response (the upstream's, errors included) is
   returned untouched, streaming included.

The transports only use the request/response API that ``httpx`` and its fork ``httpx2`` (used
by ``openai`` ≥ 3) share, so they plug into either: pass ``inner=httpx2.HTTPTransport()``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import anyio
import httpx

from . import errors
from .errors import ApprovalLookupFailed, ApprovalTimeout, Pag0Error

API_KEY = "x-pag0-api-key"
JUSTIFICATION = "x-pag0-justification"
REQUESTED_BY = "x-pag0-requested-by"
REQUIRES_APPROVAL = "x-pag0-requires-approval"
APPROVAL_ID = "x-pag0-approval-id"
DECISION = "x-pag0-decision"
APPROVALS_PATH = "/pag0/approvals/"

# Per-request timeouts of one status poll (seconds).
_POLL_TIMEOUT = {"connect": 5.0, "read": 10.0, "write": 5.0, "pool": 5.0}


@dataclass(frozen=True)
class ApprovalWait:
    """How long and how often to poll for a decision.

    The first poll comes after ``initial_delay`` seconds, each next delay is ``multiplier``
    times the previous one, capped at ``max_delay``; after ``timeout`` seconds in total the
    helper raises :class:`pag0.ApprovalTimeout` (the approval itself stays pending).
    """

    timeout: float = 900.0
    initial_delay: float = 0.5
    max_delay: float = 10.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.timeout < 0 or self.initial_delay <= 0 or self.max_delay <= 0:
            raise ValueError("ApprovalWait: timeout >= 0, delays > 0")
        if self.multiplier < 1:
            raise ValueError("ApprovalWait: multiplier >= 1")


@dataclass(frozen=True)
class Pending:
    """A held request: what the ``202`` said. Passed to ``on_pending`` before waiting."""

    approval_id: str
    project_id: Optional[str]
    estimated_cost_micros: Optional[int]
    expires_at: Optional[str]
    body: Any = field(repr=False, default=None)


@dataclass(frozen=True)
class Options:
    """Per-request settings; override the transport's with ``extensions={"pag0": {...}}``
    (keys: ``justification``, ``requested_by``, ``requires_approval``, ``wait``)."""

    justification: Optional[str] = None
    requested_by: Optional[str] = None
    requires_approval: bool = False
    wait: ApprovalWait = ApprovalWait()


def _merge(base: Options, ext: Any) -> Options:
    if ext is None:
        return base
    if not isinstance(ext, Mapping):
        raise TypeError("extensions['pag0'] must be a mapping")
    unknown = set(ext) - {"justification", "requested_by", "requires_approval", "wait"}
    if unknown:
        raise TypeError(f"extensions['pag0']: unknown keys {sorted(unknown)}")
    return Options(
        justification=ext.get("justification", base.justification),
        requested_by=ext.get("requested_by", base.requested_by),
        requires_approval=bool(ext.get("requires_approval", base.requires_approval)),
        wait=ext.get("wait", base.wait),
    )


def _header_value(name: str, value: str) -> str:
    if any(c in value for c in "\r\n\0"):
        raise ValueError(f"{name}: line breaks and NUL are not allowed in a header")
    return value


class _Core:
    """What the sync and async transports share: building requests and reading answers."""

    def __init__(
        self,
        proxy_url: Optional[str],
        api_key: str,
        options: Options,
        on_pending: Optional[Callable[[Pending], None]],
    ) -> None:
        if not api_key:
            raise ValueError("api_key is required (the client's x-pag0-api-key)")
        self.api_key = _header_value(API_KEY, api_key)
        self.proxy: Optional[httpx.URL] = None
        if proxy_url is not None:
            p = httpx.URL(proxy_url)
            if p.scheme not in ("http", "https") or not p.host:
                raise ValueError(f"proxy_url {proxy_url!r}: want http(s)://host[:port]")
            self.proxy = p
        self.options = options
        self.on_pending = on_pending

    def target(self, request: Any) -> Tuple[Any, Dict[str, str]]:
        """(URL to send to, headers): the proxy's address, the original host as ``Host``."""
        headers = {k: v for k, v in request.headers.items()}
        for k in ("content-length", "transfer-encoding"):
            headers.pop(k, None)
        url = request.url
        if self.proxy is not None:
            headers["host"] = url.netloc.decode("ascii")
            url = url.copy_with(
                scheme=self.proxy.scheme, host=self.proxy.host, port=self.proxy.port
            )
        return url, headers

    def pag0_headers(self, headers: Dict[str, str], o: Options) -> Dict[str, str]:
        headers[API_KEY] = self.api_key
        if o.justification:
            headers[JUSTIFICATION] = _header_value(JUSTIFICATION, o.justification)
        if o.requested_by:
            headers[REQUESTED_BY] = _header_value(REQUESTED_BY, o.requested_by)
        if o.requires_approval:
            headers[REQUIRES_APPROVAL] = "true"
        return headers

    def status_url(self, request_url: Any, approval_id: str) -> Any:
        base = self.proxy if self.proxy is not None else request_url
        return request_url.copy_with(
            scheme=base.scheme,
            host=base.host,
            port=base.port,
            raw_path=(APPROVALS_PATH + approval_id).encode("ascii"),
        )

    @staticmethod
    def pending(status: int, headers: Any, content: bytes) -> Pending:
        body: Any = None
        try:
            body = json.loads(content.decode("utf-8")) if content else None
        except (UnicodeDecodeError, ValueError):
            body = None
        b = body if isinstance(body, dict) else {}
        cost = b.get("estimatedCost")
        return Pending(
            approval_id=headers.get(APPROVAL_ID) or str(b.get("approvalId", "")),
            project_id=b.get("projectId") or headers.get("x-pag0-project"),
            estimated_cost_micros=int(cost) if isinstance(cost, str) and cost.isdigit() else None,
            expires_at=b.get("expiresAt"),
            body=body,
        )

    @staticmethod
    def is_pending(status: int, headers: Any) -> bool:
        return (
            status == 202
            and headers.get(DECISION, "").lower() == "pending"
            and bool(headers.get(APPROVAL_ID))
        )

    @staticmethod
    def poll_result(p: Pending, status: int, content: bytes) -> Optional[str]:
        """The approval's status from one poll; ``None`` when worth asking again."""
        if status >= 500 or status == 429:
            return None
        if status != 200:
            raise ApprovalLookupFailed(
                f"GET {APPROVALS_PATH}{p.approval_id}: HTTP {status}",
                status=status,
                project_id=p.project_id,
                approval_id=p.approval_id,
            )
        try:
            st = json.loads(content.decode("utf-8")).get("status")
        except (UnicodeDecodeError, ValueError, AttributeError):
            return None
        return st if isinstance(st, str) else None

    @staticmethod
    def decided_error(p: Pending, status: str) -> Optional[Pag0Error]:
        """The error for a final status other than ``approved``, else ``None``."""
        cls = {
            "denied": errors.ApprovalDenied,
            "expired": errors.ApprovalExpired,
            "used": errors.ApprovalUsed,
        }.get(status)
        if cls is None:
            return None
        return cls(
            f"approval {p.approval_id} is {status}",
            project_id=p.project_id,
            approval_id=p.approval_id,
            body=p.body,
        )

    @staticmethod
    def timeout(p: Pending, wait: ApprovalWait) -> ApprovalTimeout:
        return ApprovalTimeout(
            f"no decision on approval {p.approval_id} within {wait.timeout:g} s",
            project_id=p.project_id,
            approval_id=p.approval_id,
            body=p.body,
        )


def _next_delay(delay: float, wait: ApprovalWait) -> float:
    return min(delay * wait.multiplier, wait.max_delay)


class Pag0Transport(httpx.BaseTransport):
    """Synchronous transport: ``httpx.Client(transport=Pag0Transport(...))``."""

    def __init__(
        self,
        *,
        api_key: str,
        proxy_url: Optional[str] = None,
        justification: Optional[str] = None,
        requested_by: Optional[str] = None,
        requires_approval: bool = False,
        wait: ApprovalWait = ApprovalWait(),
        on_pending: Optional[Callable[[Pending], None]] = None,
        inner: Any = None,
    ) -> None:
        self._core = _Core(
            proxy_url,
            api_key,
            Options(justification, requested_by, requires_approval, wait),
            on_pending,
        )
        self._inner = inner if inner is not None else httpx.HTTPTransport()

    def handle_request(self, request: Any) -> Any:
        c = self._core
        o = _merge(c.options, request.extensions.get("pag0"))
        body = request.read()
        url, headers = c.target(request)
        headers = c.pag0_headers(headers, o)
        ext = {k: v for k, v in request.extensions.items() if k != "pag0"}
        make = type(request)

        def build() -> Any:
            return make(request.method, url, headers=headers, content=body, extensions=ext)

        resp = self._inner.handle_request(build())
        if c.is_pending(resp.status_code, resp.headers):
            resp.read()
            resp.close()
            p = c.pending(resp.status_code, resp.headers, resp.content)
            if c.on_pending is not None:
                c.on_pending(p)
            self._wait(make, url, p, o.wait)
            headers[APPROVAL_ID] = p.approval_id
            resp = self._inner.handle_request(build())
        if errors.is_refusal(resp.status_code, resp.headers):
            resp.read()
            resp.close()
            raise errors.error_from(resp.status_code, resp.headers, resp.content)
        return resp

    def _wait(self, make: Any, url: Any, p: Pending, wait: ApprovalWait) -> None:
        c = self._core
        deadline = time.monotonic() + wait.timeout
        delay = wait.initial_delay
        status_url = c.status_url(url, p.approval_id)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise c.timeout(p, wait)
            time.sleep(min(delay, left))
            delay = _next_delay(delay, wait)
            req = make(
                "GET",
                status_url,
                headers={API_KEY: c.api_key, "accept": "application/json"},
                extensions={"timeout": _POLL_TIMEOUT},
            )
            try:
                r = self._inner.handle_request(req)
                r.read()
                r.close()
            except Exception as e:  # a transport error of httpx or httpx2: ask again
                if not _is_transport_error(e):
                    raise
                continue
            st = c.poll_result(p, r.status_code, r.content)
            if st == "approved":
                return
            if st is not None:
                err = c.decided_error(p, st)
                if err is not None:
                    raise err

    def close(self) -> None:
        self._inner.close()


class AsyncPag0Transport(httpx.AsyncBaseTransport):
    """Asynchronous transport: ``httpx.AsyncClient(transport=AsyncPag0Transport(...))``."""

    def __init__(
        self,
        *,
        api_key: str,
        proxy_url: Optional[str] = None,
        justification: Optional[str] = None,
        requested_by: Optional[str] = None,
        requires_approval: bool = False,
        wait: ApprovalWait = ApprovalWait(),
        on_pending: Optional[Callable[[Pending], None]] = None,
        inner: Any = None,
    ) -> None:
        self._core = _Core(
            proxy_url,
            api_key,
            Options(justification, requested_by, requires_approval, wait),
            on_pending,
        )
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: Any) -> Any:
        c = self._core
        o = _merge(c.options, request.extensions.get("pag0"))
        body = await request.aread()
        url, headers = c.target(request)
        headers = c.pag0_headers(headers, o)
        ext = {k: v for k, v in request.extensions.items() if k != "pag0"}
        make = type(request)

        def build() -> Any:
            return make(request.method, url, headers=headers, content=body, extensions=ext)

        resp = await self._inner.handle_async_request(build())
        if c.is_pending(resp.status_code, resp.headers):
            await resp.aread()
            await resp.aclose()
            p = c.pending(resp.status_code, resp.headers, resp.content)
            if c.on_pending is not None:
                c.on_pending(p)
            await self._wait(make, url, p, o.wait)
            headers[APPROVAL_ID] = p.approval_id
            resp = await self._inner.handle_async_request(build())
        if errors.is_refusal(resp.status_code, resp.headers):
            await resp.aread()
            await resp.aclose()
            raise errors.error_from(resp.status_code, resp.headers, resp.content)
        return resp

    async def _wait(self, make: Any, url: Any, p: Pending, wait: ApprovalWait) -> None:
        c = self._core
        deadline = time.monotonic() + wait.timeout
        delay = wait.initial_delay
        status_url = c.status_url(url, p.approval_id)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise c.timeout(p, wait)
            await anyio.sleep(min(delay, left))
            delay = _next_delay(delay, wait)
            req = make(
                "GET",
                status_url,
                headers={API_KEY: c.api_key, "accept": "application/json"},
                extensions={"timeout": _POLL_TIMEOUT},
            )
            try:
                r = await self._inner.handle_async_request(req)
                await r.aread()
                await r.aclose()
            except Exception as e:
                if not _is_transport_error(e):
                    raise
                continue
            st = c.poll_result(p, r.status_code, r.content)
            if st == "approved":
                return
            if st is not None:
                err = c.decided_error(p, st)
                if err is not None:
                    raise err

    async def aclose(self) -> None:
        await self._inner.aclose()


def _is_transport_error(e: Exception) -> bool:
    """``httpx.TransportError`` or the same class of another httpx-compatible module."""
    if isinstance(e, httpx.TransportError):
        return True
    return any(k.__name__ == "TransportError" for k in type(e).__mro__)
