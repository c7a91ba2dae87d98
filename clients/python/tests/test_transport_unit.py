"""The transport against a scripted inner transport (httpx.MockTransport): the exact requests it
sends, without a stack."""

from __future__ import annotations

import json

import httpx
import pytest

import pag0

FAST = pag0.ApprovalWait(timeout=10, initial_delay=0.01, max_delay=0.02)


def scripted(answers):
    """An inner transport answering from a list, recording every request."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), dict(request.headers), request.read()))
        status, headers, body = answers.pop(0)
        return httpx.Response(status, headers=headers, content=json.dumps(body).encode())

    return httpx.MockTransport(handler), seen


PENDING = (202, {"x-pag0-decision": "pending", "x-pag0-approval-id": "apr_1"},
           {"approvalId": "apr_1", "status": "pending", "projectId": "p1", "estimatedCost": "2000",
            "expiresAt": "2026-12-03T00:00:00Z"})


def test_wait_then_replay_sends_the_same_bytes_with_the_approval_id():
    inner, seen = scripted([
        PENDING,
        (503, {}, {"error": "sidecar restarting"}),    # asked again
        (200, {}, {"status": "pending"}),
        (200, {}, {"status": "approved"}),
        (200, {"x-pag0-decision": "allow"}, {"ok": True}),
    ])
    pendings = []
    t = pag0.Pag0Transport(api_key="sk-1", proxy_url="http://127.0.0.1:10000", justification="why",
                           requested_by="bot", wait=FAST, on_pending=pendings.append, inner=inner)
    with httpx.Client(transport=t) as http:
        r = http.post("https://api.deepl.com:8443/v2/translate?x=1", content=b"exact bytes")
    assert r.status_code == 200 and r.json() == {"ok": True}
    assert [s[0] for s in seen] == ["POST", "GET", "GET", "GET", "POST"]
    first, replay = seen[0], seen[-1]
    assert first[1] == "http://127.0.0.1:10000/v2/translate?x=1"
    assert first[2]["host"] == "api.deepl.com:8443"
    assert first[2]["x-pag0-api-key"] == "sk-1"
    assert first[2]["x-pag0-justification"] == "why" and first[2]["x-pag0-requested-by"] == "bot"
    assert "x-pag0-approval-id" not in first[2]
    assert replay[1] == first[1] and replay[3] == first[3] == b"exact bytes"
    assert replay[2]["x-pag0-approval-id"] == "apr_1"
    for poll in seen[1:4]:
        assert poll[1] == "http://127.0.0.1:10000/pag0/approvals/apr_1"
        assert poll[2]["x-pag0-api-key"] == "sk-1"
    assert pendings[0].estimated_cost_micros == 2000 and pendings[0].project_id == "p1"


def test_a_refused_replay_raises_its_code():
    inner, _ = scripted([
        PENDING,
        (200, {}, {"status": "approved"}),
        (402, {"x-pag0-decision": "deny", "x-pag0-code": "BUDGET_EXCEEDED"},
         {"error": {"code": "BUDGET_EXCEEDED", "message": "org monthly budget", "scope": "org.monthly",
                    "projectId": "p1"}}),
    ])
    with httpx.Client(transport=pag0.Pag0Transport(api_key="k", wait=FAST, inner=inner)) as http:
        with pytest.raises(pag0.BudgetExceeded) as e:
            http.post("http://envoy/v2/translate", content=b"x")
    assert e.value.scope == "org.monthly" and e.value.status == 402


@pytest.mark.parametrize("status,cls", [("denied", pag0.ApprovalDenied), ("expired", pag0.ApprovalExpired),
                                        ("used", pag0.ApprovalUsed)])
def test_final_statuses_raise_without_replaying(status, cls):
    inner, seen = scripted([PENDING, (200, {}, {"status": status})])
    with httpx.Client(transport=pag0.Pag0Transport(api_key="k", wait=FAST, inner=inner)) as http:
        with pytest.raises(cls) as e:
            http.post("http://envoy/v2/translate", content=b"x")
    assert e.value.approval_id == "apr_1" and len(seen) == 2


def test_an_unreadable_status_is_a_lookup_failure_not_a_wait():
    inner, _ = scripted([PENDING, (404, {}, {"error": {"code": "NOT_FOUND"}})])
    with httpx.Client(transport=pag0.Pag0Transport(api_key="k", wait=FAST, inner=inner)) as http:
        with pytest.raises(pag0.ApprovalLookupFailed) as e:
            http.post("http://envoy/x", content=b"x")
    assert e.value.status == 404


def test_upstream_errors_and_unknown_extension_keys():
    inner, _ = scripted([(500, {"x-pag0-decision": "allow"}, {"upstream": "broke"})])
    with httpx.Client(transport=pag0.Pag0Transport(api_key="k", inner=inner)) as http:
        r = http.get("http://envoy/x")
        assert r.status_code == 500 and r.json() == {"upstream": "broke"}
        with pytest.raises(TypeError):
            http.get("http://envoy/x", extensions={"pag0": {"justificaton": "typo"}})
