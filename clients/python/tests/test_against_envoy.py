"""pag0 (Python) against real Envoy + pag0-sidecar + mock upstream (see conftest.py)."""

from __future__ import annotations

import time

import httpx
import httpx2
import pytest
from openai import OpenAI

import pag0

TRANSLATE = "https://api.deepl.com/v2/translate"
FAST = pag0.ApprovalWait(timeout=30, initial_delay=0.1, max_delay=0.5)


def translate_body(text: str) -> dict:
    return {"text": [text], "target_lang": "DE"}


def test_allowed_call_passes_untouched(stack):
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_approval, requested_by="py-agent@acme.com") as http:
        r = http.post("https://api.salesforce.com/echo?q=1", json={"soql": "SELECT Id FROM Account"})
        assert r.status_code == 200, r.text
        assert r.headers["x-pag0-decision"] == "allow"
        assert r.headers["x-pag0-project"] == "p1"
        echo = r.json()
        # The upstream saw the original host and path; the filter stripped every x-pag0-* header.
        assert echo["method"] == "POST" and echo["path"] == "/echo?q=1"
        assert echo["headers"]["host"] == ["api.salesforce.com"]
        assert not [h for h in echo["headers"] if h.startswith("x-pag0-")], echo["headers"]
        # An upstream error is the upstream's answer, not a pag0 exception.
        r = http.get("https://api.salesforce.com/status/418")
        assert r.status_code == 418
        assert r.headers.get("x-pag0-decision") == "allow"


def test_streamed_answer_is_streamed_untouched(stack):
    chat = {"model": "gpt-4", "max_tokens": 5, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_open) as http:
        with http.stream("POST", "https://api.openai.com/v1/chat/completions", json=chat) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = [line for line in r.iter_lines() if line.startswith("data: ")]
    # The mock's 4 content events, the usage event, [DONE].
    assert len(events) == 6 and events[-1] == "data: [DONE]", events
    assert '"usage"' in events[-2]


def test_held_call_is_approved_while_waiting_and_replayed(stack, approver):
    a = approver("approve")
    before = stack.arrived("/v2/translate")
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_approval, wait=FAST, on_pending=a,
                     justification="Q3 deck for ACME", requested_by="py-sales-bot@acme.com") as http:
        r = http.post(TRANSLATE, json=translate_body("approve me (sync)"))
    a.join()
    assert a.pending_seen and a.status == 200, (a.pending_seen, a.status)
    assert r.status_code == 200, r.text
    assert r.headers["x-pag0-decision"] == "allow"
    assert r.json()["translations"][0]["text"].startswith("[de] ")
    assert "approve me (sync)" in r.json()["translations"][0]["text"]
    (approval_id,) = a.seen
    assert approval_id.startswith("apr_")
    stored = stack.approval(approval_id)
    assert stored["status"] == "used"
    assert stored["justification"] == "Q3 deck for ACME" and stored["requestedBy"] == "py-sales-bot@acme.com"
    # The 202 never reached the upstream; the one replay did.
    assert stack.arrived("/v2/translate") == before + 1


@pytest.mark.anyio
async def test_async_client_waits_and_replays(stack, approver):
    a = approver("approve")
    async with pag0.async_client(proxy_url=stack.proxy_url, api_key=stack.key_approval, requested_by="py-agent@acme.com", wait=FAST,
                                 on_pending=a) as http:
        r = await http.post(TRANSLATE, json=translate_body("approve me (async)"))
    a.join()
    assert r.status_code == 200, r.text
    assert "approve me (async)" in r.json()["translations"][0]["text"]
    assert stack.approval(a.seen[0])["status"] == "used"


def test_denial_raises_the_typed_error(stack, approver):
    a = approver("deny")
    before = stack.arrived("/v2/translate")
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_approval, requested_by="py-agent@acme.com", wait=FAST, on_pending=a) as http:
        with pytest.raises(pag0.ApprovalDenied) as e:
            http.post(TRANSLATE, json=translate_body("deny me"))
    a.join()
    assert e.value.code == "APPROVAL_DENIED"
    assert e.value.approval_id == a.seen[0]
    assert e.value.project_id == "p1"
    assert isinstance(e.value, pag0.Pag0Error)
    assert stack.arrived("/v2/translate") == before


def test_per_request_requires_approval_header(stack, approver):
    # /echo costs 1000, below the threshold: held only because the agent asks for approval.
    a = approver("deny")
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_approval, requested_by="py-agent@acme.com", wait=FAST, on_pending=a) as http:
        assert http.post("https://api.salesforce.com/echo").status_code == 200
        assert a.seen == []
        with pytest.raises(pag0.ApprovalDenied):
            http.post("https://api.salesforce.com/echo", extensions={"pag0": {"requires_approval": True}})
    a.join()
    assert len(a.seen) == 1


def test_budget_refusal_carries_its_scope(stack):
    before = stack.arrived("/v2/translate")
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_budget) as http:
        with pytest.raises(pag0.BudgetExceeded) as e:
            http.post(TRANSLATE, json=translate_body("too expensive"))
    assert e.value.status == 402
    assert e.value.code == "BUDGET_EXCEEDED"
    assert e.value.scope == "project.monthly"
    assert e.value.project_id == "p2"
    assert "budget" in e.value.message
    assert stack.arrived("/v2/translate") == before


def test_other_refusals_are_typed(stack):
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_open) as http:
        with pytest.raises(pag0.EndpointBlocked) as e:
            http.get("https://suspicious-api.com/data")
        assert e.value.status == 403 and e.value.code == "ENDPOINT_BLOCKED"
    with pag0.client(proxy_url=stack.proxy_url, api_key="sk-nobody") as http:
        with pytest.raises(pag0.UnknownApiKey) as e2:
            http.get("https://api.salesforce.com/echo")
        assert e2.value.status == 401 and isinstance(e2.value, pag0.AuthenticationFailed)


def test_deadline_expires_cleanly_when_nobody_decides(stack):
    seen = []
    wait = pag0.ApprovalWait(timeout=1.5, initial_delay=0.1, max_delay=0.4)
    before = stack.arrived("/v2/translate")
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_approval, requested_by="py-agent@acme.com", wait=wait, on_pending=seen.append) as http:
        t0 = time.monotonic()
        with pytest.raises(pag0.ApprovalTimeout) as e:
            http.post(TRANSLATE, json=translate_body("nobody decides"))
        took = time.monotonic() - t0
    assert 1.5 <= took < 15, took
    assert e.value.approval_id == seen[0].approval_id
    assert e.value.status is None and e.value.code == "APPROVAL_TIMEOUT"
    # Nothing was replayed; the approval is still pending for a later decision.
    assert stack.approval(seen[0].approval_id)["status"] == "pending"
    assert stack.arrived("/v2/translate") == before


def test_agent_route_serves_only_the_agents_own_approval(stack):
    seen = []
    wait = pag0.ApprovalWait(timeout=0.3, initial_delay=0.1, max_delay=0.1)
    with pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_approval, requested_by="py-agent@acme.com", wait=wait, on_pending=seen.append) as http:
        with pytest.raises(pag0.ApprovalTimeout):
            http.post(TRANSLATE, json=translate_body("route check"))
    url = f"{stack.proxy_url}/pag0/approvals/{seen[0].approval_id}"
    own = httpx.get(url, headers={"x-pag0-api-key": stack.key_approval})
    assert own.status_code == 200 and own.json()["status"] == "pending"
    # Another client's key, no key, an admin token (removed by the route), other methods.
    assert httpx.get(url, headers={"x-pag0-api-key": stack.key_open}).status_code == 404
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"authorization": f"Bearer {stack.admin_token}"}).status_code == 401
    approve = httpx.post(url + "/approve", headers={"authorization": f"Bearer {stack.approver_token}"})
    assert approve.headers.get("x-pag0-decision") == "deny", approve.headers
    assert stack.approval(seen[0].approval_id)["status"] == "pending"


def test_openai_sdk_through_the_helper(stack):
    http = pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_open, httpx_module=httpx2,
                       requested_by="py-openai-agent@acme.com")
    ai = OpenAI(base_url="https://api.openai.com/v1", api_key="sk-upstream-not-used", http_client=http,
                max_retries=0)
    raw = ai.chat.completions.with_raw_response.create(
        model="gpt-4", max_tokens=20, messages=[{"role": "user", "content": "Summarise Q3 for ACME."}])
    assert raw.headers["x-pag0-decision"] == "allow"
    assert raw.headers["x-pag0-project"] == "p3"
    done = raw.parse()
    assert done.choices[0].message.content == "Hello from the mock"
    assert done.usage is not None and done.usage.completion_tokens == 20
    # A refusal through the SDK is the typed pag0 error, not wrapped or retried by openai.
    broke = OpenAI(base_url="https://api.openai.com/v1", api_key="sk-upstream-not-used",
                   http_client=pag0.client(proxy_url=stack.proxy_url, api_key=stack.key_budget, httpx_module=httpx2))
    with pytest.raises(pag0.BudgetExceeded) as e:
        broke.chat.completions.create(model="gpt-4", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert e.value.scope == "project.monthly"


def test_transport_rejects_bad_settings():
    with pytest.raises(ValueError):
        pag0.Pag0Transport(api_key="")
    with pytest.raises(ValueError):
        pag0.Pag0Transport(api_key="k", proxy_url="ftp://x")
    with pytest.raises(ValueError):
        pag0.ApprovalWait(timeout=1, initial_delay=0)
    with pytest.raises(ValueError):
        pag0.client(api_key="k", proxy_url="http://127.0.0.1:9", justification="a\r\nb").get("http://x/")


def test_error_mapping_keeps_unknown_codes():
    e = pag0.error_from(403, httpx.Headers({"x-pag0-decision": "deny", "x-pag0-code": "NEW_CODE"}), b"not json")
    assert type(e) is pag0.Pag0Error and e.code == "NEW_CODE" and e.status == 403
    e = pag0.error_from(402, httpx.Headers({}), b'{"error":{"code":"BUDGET_EXCEEDED","message":"m","scope":"org.daily","projectId":"p"}}')
    assert isinstance(e, pag0.BudgetExceeded) and e.scope == "org.daily" and e.project_id == "p"
