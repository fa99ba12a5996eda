"""Fuzzing the proxy's edge with hypothesis: bodies, headers and HTTP framing.

Every example is sent on a fresh connection to one proxy (in front of a fake engine) and
must be answered within 10 s, below 500, and, when refused, with an OpenAI-shaped JSON
error.  After the run the proxy is healthy and its books balance: nothing in flight, nothing
queued, every completed request counted once.  Examples are derandomized (the same ones
every run) and bounded so the suite is quick.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fake_backend import FakeBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from proxy_rig import MODEL, Rig, rig
from raw_http import RawResponse, assert_openai_error, exchange

KEY = "fuzz-key"
EXAMPLES = 250
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class LiveProxy:
    """A proxy served from its own thread and loop, for blocking clients."""

    port: int
    rig: Rig
    loop: asyncio.AbstractEventLoop
    answered: dict[int, int] = field(default_factory=dict)  # status -> count


@pytest.fixture(scope="module")
def live() -> Iterator[LiveProxy]:
    ready: list[LiveProxy] = []
    started = threading.Event()
    stop: list[asyncio.Event] = []

    async def serve() -> None:
        overrides = {
            "auth": {"api_keys": [KEY], "admin_key": "adm"},
            "connections": {"header_timeout_s": 2, "body_timeout_s": 2, "idle_timeout_s": 5},
            "slo": {"classes": {"gold": {"ttft_ms": 500, "tpot_ms": 50}}},
            "limits": {"max_body_bytes": 65536},
        }
        async with rig([FakeBackend("a")], **overrides) as r:
            stop.append(asyncio.Event())
            port = int(r.url.rsplit(":", 1)[1])
            ready.append(LiveProxy(port, r, asyncio.get_running_loop()))
            started.set()
            await stop[0].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(30), "the proxy did not start"
    proxy = ready[0]
    yield proxy
    proxy.loop.call_soon_threadsafe(stop[0].set)
    thread.join(30)


# -- strategies ------------------------------------------------------------------------

PATHS = [
    b"/v1/completions",
    b"/v1/chat/completions",
    b"/v1/models",
    b"/health",
    b"/ready",
    b"/metrics",
    b"/admin/backends",
    b"/nope",
    b"/v1/completions?x=%ff",
    b"//",
    b"*",
]
METHODS = [b"POST", b"GET", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"G@T", b"post"]
HEADER_NAMES = [
    b"Authorization",
    b"Content-Type",
    b"x-slo-class",
    b"x-slo-ttft-ms",
    b"x-slo-tpot-ms",
    b"Accept",
    b"Expect",
    b"Connection",
    b"X-Junk",
    b"Host",
]
header_value = st.one_of(
    st.sampled_from(
        [
            b"Bearer " + KEY.encode(),
            b"Bearer nope",
            b"gold",
            b"1",
            b"0",
            b"-5",
            b"nan",
            b"1e308",
            b"100-continue",
            b"keep-alive",
            b"application/json",
        ]
    ),
    st.binary(max_size=24).filter(lambda b: b"\r" not in b and b"\n" not in b),
    st.binary(max_size=12),  # may hold CR/LF: header injection and broken framing
)
headers = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(HEADER_NAMES), st.binary(min_size=1, max_size=8)), header_value
    ),
    max_size=5,
)
json_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),
        st.floats(allow_nan=False),
        st.text(max_size=12),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
GEN_KEYS = [
    "model",
    "prompt",
    "messages",
    "max_tokens",
    "stream",
    "n",
    "temperature",
    "stream_options",
    "stop",
    "logprobs",
    "max_completion_tokens",
    "ignore_eos",
]


@st.composite
def json_bodies(draw: st.DrawFn) -> bytes:
    body: dict[str, object] = {"model": MODEL, "prompt": "hi", "max_tokens": 3}
    if draw(st.booleans()):
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    for key in draw(st.lists(st.sampled_from(GEN_KEYS), max_size=4)):
        body[key] = draw(json_value)
    return json.dumps(body).encode()  # stdlib: keeps huge ints and writes Infinity


bodies = st.one_of(json_bodies(), st.binary(max_size=64), st.just(b""))


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS))
    path = draw(st.one_of(st.sampled_from(PATHS), st.binary(min_size=1, max_size=16)))
    version = draw(st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b""]))
    body = draw(bodies)
    encoding = draw(st.sampled_from([None, None, b"gzip", b"deflate", b"gzip-wrong", b"br"]))
    if encoding == b"gzip":
        body = gzip.compress(body)
    elif encoding == b"deflate":
        body = zlib.compress(body)
    lines = [method + b" " + path + (b" " + version if version else b""), b"Host: fuzz"]
    lines += [b"Authorization: Bearer " + KEY.encode()] if draw(st.booleans()) else []
    if encoding is not None:
        lines.append(b"Content-Encoding: " + encoding.replace(b"-wrong", b""))
    lines += [name + b": " + value for name, value in draw(headers)]
    framing = draw(st.sampled_from(["length", "length", "chunked", "short", "long", "none"]))
    if framing == "chunked":
        size = draw(st.integers(1, 8))
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        lie = draw(st.sampled_from([0, 0, 1, -1]))
        body = b"".join(b"%x\r\n%s\r\n" % (max(0, len(p) + lie), p) for p in pieces) + b"0\r\n\r\n"
        lines.append(b"Transfer-Encoding: chunked")
    elif framing != "none":
        n = len(body) + {"length": 0, "short": -1, "long": 3}[framing]
        lines.append(b"Content-Length: %d" % max(0, n))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def well_formed(draw: st.DrawFn) -> bytes:
    """Keyed, framed generation requests with fuzzed JSON and SLO headers (many are served)."""
    chat = draw(st.booleans())
    path = b"/v1/chat/completions" if chat else b"/v1/completions"
    body = draw(json_bodies())
    if chat:
        body = json.dumps({**json.loads(body), "messages": [{"role": "user", "content": "x"}]})
        body = body.encode()
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: fuzz", b"Authorization: Bearer fuzz-key"]
    if draw(st.booleans()):
        body = gzip.compress(body)
        lines.append(b"Content-Encoding: gzip")
    slo = st.sampled_from([b"gold", b"nope", b"200", b"5000", b"0", b"-1", b"x", b"1e9"])
    for name in draw(st.lists(st.sampled_from([b"x-slo-class", b"x-slo-ttft-ms"]), max_size=2)):
        lines.append(name + b": " + draw(slo))
    lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


# -- the property ----------------------------------------------------------------------


def check(resp: RawResponse | None, data: bytes) -> None:
    assert resp is not None, f"closed without an answer: {data[:200]!r}"
    assert resp.status < 500, (resp.status, resp.body[:300], data[:300])
    if resp.status >= 400 and not data.startswith(b"HEAD "):
        assert_openai_error(resp)


@FUZZ_SETTINGS
@given(data=st.one_of(well_formed(), requests()))
def test_fuzzed_requests_never_get_a_5xx(live: LiveProxy, data: bytes) -> None:
    resp = exchange(live.port, data, timeout_s=10.0)
    check(resp, data)
    assert resp is not None
    live.answered[resp.status] = live.answered.get(resp.status, 0) + 1


def test_after_the_fuzz_the_proxy_is_healthy_and_its_books_balance(live: LiveProxy) -> None:
    assert sum(live.answered.values()) >= EXAMPLES // 2, "the fuzz test ran first"
    health = exchange(live.port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert health is not None and health.status == 200
    gw = live.rig.gateway

    def settled() -> bool:
        return not gw.flights and gw.held == 0 and all(b.inflight == 0 for b in gw.backends)

    async def wait_settled() -> None:
        for _ in range(1000):
            if settled():
                return
            await asyncio.sleep(0.01)

    asyncio.run_coroutine_threadsafe(wait_settled(), live.loop).result(30)
    assert settled(), "a request is still in flight or queued"
    ended = sum(gw.telemetry.requests.values())
    completed = sum(
        n for (_, outcome), n in gw.telemetry.requests.items() if outcome == "completed"
    )
    assert completed >= 1, "some fuzzed requests must have been served"
    assert ended >= completed
    assert completed <= live.answered.get(200, 0) + ended - completed
