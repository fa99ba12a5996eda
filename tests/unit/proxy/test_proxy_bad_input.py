"""Bad input never gets a 5xx: undecodable bodies, undecodable header bytes and whatever the
HTTP parser rejects are OpenAI-shaped JSON 4xx answers, and the log shows no traceback."""

from __future__ import annotations

import gzip
import logging
import zlib

import pytest
from fake_backend import FakeBackend
from proxy_rig import MODEL, RigFactory
from raw_http import assert_openai_error, async_exchange

KEY = "k1"
AUTH = {"api_keys": [KEY], "admin_key": "adm"}
GOOD = b'{"model": "%s", "prompt": "x", "max_tokens": 2}' % MODEL.encode()


def post(path: bytes, body: bytes, *headers: bytes, auth: bytes = KEY.encode()) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: x", b"Authorization: Bearer " + auth]
    lines += [*headers, b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert noisy == [], [r.getMessage() for r in noisy]


ENCODING_ERRORS = {
    "gzip-not-gzip": post(b"/v1/completions", b"hello", b"Content-Encoding: gzip"),
    "deflate-not-deflate": post(b"/v1/completions", b"hello", b"Content-Encoding: deflate"),
    "gzip-cut-short": post(b"/v1/completions", gzip.compress(GOOD)[:15], b"Content-Encoding: gzip"),
    "deflate-garbage-tail": post(
        b"/v1/completions", zlib.compress(GOOD) + b"\xff" * 9, b"Content-Encoding: deflate"
    ),
    "gzip-relayed-route": post(b"/tokenize", b"hello", b"Content-Encoding: gzip"),
    "gzip-unauthorised": post(b"/v1/completions", b"hello", b"Content-Encoding: gzip", auth=b"no"),
}

FRAMING_ERRORS = {  # what the HTTP parser itself rejects
    "brotli-unsupported": post(b"/v1/completions", b"\x8b\x00\x80", b"Content-Encoding: br"),
    "bad-method": b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n",
    "bad-version": b"GET /health HTTP/9.9\r\nHost: x\r\n\r\n",
    "control-char-in-header-name": b"GET /health HTTP/1.1\r\nHost: x\r\nBa\x01d: y\r\n\r\n",
    "nul-in-path": b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-utf8-path": b"GET /v1/\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "line-too-long": b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    "header-too-long": b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n",
    "bad-content-length": b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n",
    "te-and-cl": (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n0\r\n\r\n"
    ),
    "bad-chunk-size": (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\nabc\r\n0\r\n\r\n"
    ),
    "chunk-longer-than-said": (
        b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k1\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n"
    ),
    "bare-lf-in-header": b"GET /health HTTP/1.1\r\nHost: x\nX: y\r\n\r\n",
    "space-before-colon": b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n",
    "not-http": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40 + b"\r\n\r\n",
}


@pytest.mark.parametrize("name", list(ENCODING_ERRORS) + list(FRAMING_ERRORS))
async def test_malformed_requests_are_json_4xx_without_tracebacks(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    data = ENCODING_ERRORS.get(name) or FRAMING_ERRORS[name]
    async with make_rig([FakeBackend("a")], auth=AUTH) as r:
        with caplog.at_level(logging.DEBUG):
            resp = await async_exchange(port_of(r.url), data)
            assert_openai_error(resp)
            ok = await r.session.get(r.url + "/health")
            assert ok.status == 200
            dropped = r.gateway.telemetry.connections.dropped["malformed_request"]
            assert dropped == (1 if name in FRAMING_ERRORS else 0)
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    "path",
    [
        b"/v1/completions",
        b"/v1/chat/completions",
        b"/v1/models",
        b"/admin/backends",
        b"/admin/requests",
    ],
)
@pytest.mark.parametrize("token", [b"\xff\xfe", b"k1\xc3", b"\xe2\x82", b"caf\xe9"])
async def test_undecodable_authorization_is_401(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture, path: bytes, token: bytes
) -> None:
    method = b"GET" if b"models" in path or b"admin" in path else b"POST"
    body = b"" if method == b"GET" else GOOD
    data = (
        method
        + b" "
        + path
        + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )
    async with make_rig([FakeBackend("a")], auth=AUTH) as r:
        with caplog.at_level(logging.DEBUG):
            assert_openai_error(await async_exchange(port_of(r.url), data), 401)
    no_tracebacks(caplog)


@pytest.mark.parametrize(
    "header",
    [
        b"x-slo-class: \xff\xfe",
        b"x-slo-ttft-ms: 1\xff0",
        b"Content-Type: \xff/\xfe",
        b"x-slo-tpot-ms: \xe9",
    ],
)
async def test_undecodable_slo_and_other_headers_are_4xx(
    make_rig: RigFactory, caplog: pytest.LogCaptureFixture, header: bytes
) -> None:
    async with make_rig([FakeBackend("a")], auth=AUTH) as r:
        with caplog.at_level(logging.DEBUG):
            resp = await async_exchange(port_of(r.url), post(b"/v1/completions", GOOD, header))
            if resp is not None and resp.status == 200:
                return  # a header the proxy does not read may pass
            assert_openai_error(resp)
    no_tracebacks(caplog)


async def test_a_valid_gzip_body_is_served(make_rig: RigFactory) -> None:
    async with make_rig([FakeBackend("a")], auth=AUTH) as r:
        data = post(b"/v1/completions", gzip.compress(GOOD), b"Content-Encoding: gzip")
        resp = await async_exchange(port_of(r.url), data)
        assert resp is not None and resp.status == 200, resp
