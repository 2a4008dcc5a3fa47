"""A real local HTTP server that speaks the parts of Kernel's API the service uses.

The official `kernel` SDK talks to it through `base_url`, exactly as it talks
to Kernel:

    with FakeKernel() as fake:
        client = AsyncKernel(api_key=fake.api_key, base_url=fake.base_url)
        ...
        assert fake.computer_calls() == [("click_mouse", {"x": 1, "y": 2, ...})]

Endpoints: POST /browsers, GET and DELETE /browsers/{id}, and the Computer
Controls under /browsers/{id}/computer/ (click_mouse, move_mouse, drag_mouse,
scroll, press_key, type, screenshot, get_mouse_position). Like Kernel, a
browser it creates carries a `base_url` and a `jwt` in its `cdp_ws_url`, from
which the SDK sends computer calls straight to the browser's VM (here
/vm/{id}/computer/..., authenticated by `?jwt=` instead of the API key);
`direct_vm=False` leaves them on the API. Requests are validated as Kernel
validates them (kernel_validation.py), answered with Kernel's error envelope,
and recorded. Screenshots are real PNGs of the browser's viewport.
"""

from __future__ import annotations

import io
import json
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs

from PIL import Image

from tests.fakes.http_server import (
    BackgroundServer,
    Receive,
    Reply,
    Scope,
    Send,
    pause,
    read_body,
    send_reply,
)
from tests.fakes.kernel_validation import (
    FIELDS,
    BadRequest,
    check_action,
    check_create,
    check_fields,
)

COMPUTER_OPS = FIELDS.keys() - {"create"}  # the Computer Controls the fake speaks
DEFAULT_VIEWPORT = (1920, 1080)  # Kernel's image default when `viewport` is omitted


class KernelCall(NamedTuple):
    """One request: `route` is "api" (API key) or "vm" (direct to the browser, by jwt)."""

    method: str
    path: str
    route: str
    op: str
    session_id: str | None
    body: Any
    headers: dict[str, str]


@dataclass
class FakeBrowser:
    session_id: str
    jwt: str
    width: int
    height: int
    created_with: dict[str, Any]
    cursor: tuple[int, int]
    deleted: bool = False
    actions: int = 0


class KernelFault(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def reply(self) -> Reply:
        body = json.dumps({"code": self.code, "message": self.message}).encode()
        return Reply(self.status, [(b"content-type", b"application/json")], [body])


class FakeKernel:
    """The fake Kernel API. Use as a context manager or call start()/stop()."""

    def __init__(self, *, api_key: str = "test-kernel-key", direct_vm: bool = True) -> None:
        self._settings = (api_key, direct_vm)  # what reset() puts back
        self.api_key = api_key
        self.direct_vm = direct_vm
        self.create_delay = 0.0  # seconds a create is held back *after* the browser exists
        self._lock = threading.Lock()
        self._calls: list[KernelCall] = []
        self._browsers: dict[str, FakeBrowser] = {}
        self._faults: deque[tuple[str | None, KernelFault]] = deque()
        self._http = BackgroundServer(self._asgi, name="fake-kernel")

    # ---- lifecycle and inspection ------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._http.base_url

    def start(self) -> Self:
        self._http.start()
        return self

    def stop(self) -> None:
        self._http.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every call, browser and fault, and put back the settings the server was made
        with (api_key, direct_vm, create_delay): a shared server then starts each test as new."""
        self.api_key, self.direct_vm = self._settings
        self.create_delay = 0.0
        with self._lock:
            self._calls.clear()
            self._browsers.clear()
            self._faults.clear()

    @property
    def calls(self) -> list[KernelCall]:
        with self._lock:
            return list(self._calls)

    def computer_calls(self, session_id: str | None = None) -> list[tuple[str, Any]]:
        """(operation, body) of every Computer Controls request, oldest first."""
        return [
            (c.op, c.body)
            for c in self.calls
            if c.op in COMPUTER_OPS and session_id in (None, c.session_id)
        ]

    def browser(self, session_id: str) -> FakeBrowser:
        with self._lock:
            return self._browsers[session_id]

    @property
    def browsers(self) -> list[FakeBrowser]:
        with self._lock:
            return list(self._browsers.values())

    def fail_next(self, status: int, *, op: str | None = None, message: str = "injected") -> None:
        """Answer the next request for `op` (any when None) with `status`, before it runs."""
        code = {400: "bad_request", 404: "not_found", 429: "rate_limited"}.get(status, "internal")
        with self._lock:
            self._faults.append((op, KernelFault(status, code, message)))

    # ---- the app -----------------------------------------------------------------------

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw, _ = await read_body(receive, 1 << 20)
        if raw is None:
            return
        try:
            reply = await self._handle(scope, raw, receive)
        except KernelFault as fault:
            reply = fault.reply()
        except BadRequest as error:
            reply = KernelFault(400, "bad_request", str(error)).reply()
        if reply is not None:
            await send_reply(send, reply)

    async def _handle(self, scope: Scope, raw: bytes, receive: Receive) -> Reply | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method, path = scope["method"], scope["path"]
        parts = path.strip("/").split("/")
        route = "vm" if parts[0] == "vm" else "api"
        session_id = parts[1] if len(parts) > 1 else None
        op = _operation(method, parts)
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw  # recorded as it came, refused below
        with self._lock:
            self._calls.append(KernelCall(method, path, route, op, session_id, body, headers))
        if op == "unknown":
            raise KernelFault(404, "not_found", f"no route for {method} {path}")
        if isinstance(body, bytes):
            raise BadRequest("request body is not valid JSON")
        self._authenticate(route, headers, scope, session_id)
        self._inject_fault(op)
        if op == "create":
            return await self._create(check_fields("create", body or {}), receive)
        browser = self._live(session_id)
        if op == "retrieve":
            return _json(200, self._browser_json(browser))
        if op == "delete":
            with self._lock:
                browser.deleted = True
            return Reply(204, [], [b""])
        return self._computer(browser, op, check_fields(op, body or {}))

    def _authenticate(
        self, route: str, headers: dict[str, str], scope: Scope, session_id: str | None
    ) -> None:
        if route == "vm":
            jwt = parse_qs(scope.get("query_string", b"").decode()).get("jwt", [""])[0]
            with self._lock:
                browser = self._browsers.get(session_id or "")
            if browser is None or jwt != browser.jwt:
                raise KernelFault(401, "unauthorized", "invalid or missing jwt")
        elif headers.get("authorization") != f"Bearer {self.api_key}":
            raise KernelFault(401, "unauthorized", "missing or invalid API key")

    def _inject_fault(self, op: str) -> None:
        with self._lock:
            for index, (wanted, fault) in enumerate(self._faults):
                if wanted in (None, op):
                    del self._faults[index]
                    raise fault

    def _live(self, session_id: str | None) -> FakeBrowser:
        with self._lock:
            browser = self._browsers.get(session_id or "")
        if browser is None or browser.deleted:
            raise KernelFault(404, "not_found", f"browser session {session_id!r} not found")
        return browser

    async def _create(self, body: Any, receive: Receive) -> Reply | None:
        check_create(body)
        viewport = body.get("viewport") or {}
        width = viewport.get("width", DEFAULT_VIEWPORT[0])
        height = viewport.get("height", DEFAULT_VIEWPORT[1])
        browser = FakeBrowser(
            session_id=secrets.token_hex(8),
            jwt=secrets.token_urlsafe(16),
            width=width,
            height=height,
            created_with=body,
            cursor=(width // 2, height // 2),
        )
        with self._lock:
            self._browsers[browser.session_id] = browser
        # The browser exists before the answer, as on Kernel: a client that gives up
        # waiting (a cancelled start) leaves it behind unless it deletes it later.
        stopping = self._http.stopping
        assert stopping is not None
        if await pause(self.create_delay, receive, stopping) != "elapsed":
            return None
        return _json(200, self._browser_json(browser))

    def _browser_json(self, browser: FakeBrowser) -> dict[str, Any]:
        sid, body = browser.session_id, browser.created_with
        vm = f"{self.base_url}/vm/{sid}"
        data: dict[str, Any] = {
            "session_id": sid,
            "cdp_ws_url": f"{vm.replace('http://', 'ws://')}/cdp?jwt={browser.jwt}",
            "webdriver_ws_url": f"{vm.replace('http://', 'ws://')}/webdriver",
            "created_at": datetime.now(UTC).isoformat(),
            "headless": body.get("headless", False),
            "stealth": False,
            "memory": "1GiB",
            "region": "us-east",
            "timeout_seconds": body.get("timeout_seconds", 60),
            "viewport": {"width": browser.width, "height": browser.height},
        }
        if "start_url" in body:
            data["start_url"] = body["start_url"]
        if self.direct_vm:
            data["base_url"] = vm
        return data

    def _computer(self, browser: FakeBrowser, op: str, body: Any) -> Reply:
        size = (browser.width, browser.height)
        check_action(op, body, size)
        if op == "screenshot":
            region = body.get("region") or {"width": size[0], "height": size[1]}
            return _png(region["width"], region["height"], browser.actions)
        with self._lock:
            if op == "get_mouse_position":
                x, y = browser.cursor
                return _json(200, {"x": x, "y": y})
            browser.actions += 1
            if op in ("click_mouse", "move_mouse", "scroll"):
                browser.cursor = (body["x"], body["y"])
            elif op == "drag_mouse":
                browser.cursor = (body["path"][-1][0], body["path"][-1][1])
        return Reply(200, [], [b""])


def _operation(method: str, parts: list[str]) -> str:
    if parts[0] == "browsers" and len(parts) == 1 and method == "POST":
        return "create"
    if parts[0] == "browsers" and len(parts) == 2 and method in ("GET", "DELETE"):
        return "retrieve" if method == "GET" else "delete"
    if (
        parts[0] in ("browsers", "vm")
        and len(parts) == 4
        and parts[2] == "computer"
        and parts[3] in COMPUTER_OPS
        and method == "POST"
    ):
        return parts[3]
    return "unknown"


def _json(status: int, data: Any) -> Reply:
    return Reply(status, [(b"content-type", b"application/json")], [json.dumps(data).encode()])


def _png(width: int, height: int, actions: int) -> Reply:
    # The colour follows the number of actions, so consecutive screenshots differ.
    colour = ((actions * 67 + 32) % 256, (actions * 131 + 96) % 256, 160)
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, format="PNG")
    return Reply(200, [(b"content-type", b"image/png")], [out.getvalue()])
