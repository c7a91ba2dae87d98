"""The stack these tests run against is started by `cargo test -p pag0-envoy --test clients`
(envoy/tests/clients.rs): real Envoy + pag0-sidecar + mock upstream. It passes addresses and
keys in the environment; run outside it, the tests fail with that hint instead of skipping."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import httpx
import pytest

VARS = ("PAG0_PROXY_URL", "PAG0_SIDECAR_URL", "PAG0_MOCK_URL", "PAG0_ADMIN_TOKEN", "PAG0_APPROVER_TOKEN",
        "PAG0_KEY_APPROVAL", "PAG0_KEY_BUDGET", "PAG0_KEY_OPEN")


@dataclass
class Stack:
    proxy_url: str
    sidecar_url: str
    mock_url: str
    admin_token: str
    approver_token: str
    key_approval: str
    key_budget: str
    key_open: str

    def approval(self, approval_id: str) -> Any:
        r = httpx.get(f"{self.sidecar_url}/v1/approvals/{approval_id}",
                      headers={"authorization": f"Bearer {self.admin_token}"}, timeout=10)
        r.raise_for_status()
        return r.json()

    def decide(self, approval_id: str, action: str) -> int:
        r = httpx.post(f"{self.sidecar_url}/v1/approvals/{approval_id}/{action}",
                       headers={"authorization": f"Bearer {self.approver_token}"},
                       json={"comment": "pytest"}, timeout=10)
        return r.status_code

    def arrived(self, path: str) -> int:
        r = httpx.get(f"{self.mock_url}/__stats", timeout=10)
        return int(r.json()["arrived"].get(path, 0))


@pytest.fixture(scope="session")
def stack() -> Stack:
    missing = [v for v in VARS if not os.environ.get(v)]
    if missing:
        pytest.fail(f"missing {missing}: run these tests through `cargo test -p pag0-envoy --test clients`", pytrace=False)
    return Stack(*(os.environ[v] for v in VARS))


class Approver:
    """An approver who decides in another thread once the client is waiting: it first sees
    the approval pending on the sidecar, then approves or denies."""

    def __init__(self, stack: Stack, action: str) -> None:
        self.stack = stack
        self.action = action
        self.seen: List[str] = []
        self.status: Optional[int] = None
        self.pending_seen = False
        self.thread: Optional[threading.Thread] = None

    def __call__(self, pending: Any) -> None:
        self.seen.append(pending.approval_id)
        self.thread = threading.Thread(target=self._run, args=(pending.approval_id,), daemon=True)
        self.thread.start()

    def _run(self, approval_id: str) -> None:
        self.pending_seen = self.stack.approval(approval_id)["status"] == "pending"
        self.status = self.stack.decide(approval_id, self.action)

    def join(self) -> None:
        assert self.thread is not None, "on_pending was never called"
        self.thread.join(timeout=30)


@pytest.fixture
def approver(stack: Stack) -> Callable[[str], Approver]:
    return lambda action: Approver(stack, action)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def wait_until(cond: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()
