"""Client and admin authentication (``Authorization: Bearer <key>``).

Theory of operation: with ``auth.api_keys`` configured, every ``/v1/*`` request must carry
one of them; with none configured the API is open.  ``/admin/*`` needs ``auth.admin_key``
and is disabled (403) when no admin key is configured.  Keys are compared in constant time.
Client credentials are never forwarded upstream: the proxy talks to backends with each
backend's own configured key.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from aiohttp import web

from ascendra_proxy.proxy.errors import ApiError


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _matches(token: str, keys: Sequence[str]) -> bool:
    found = False
    for key in keys:
        found = hmac.compare_digest(token.encode(), key.encode()) or found
    return found


class Auth:
    def __init__(self, api_keys: Sequence[str], admin_key: str | None) -> None:
        self._keys = tuple(api_keys)
        self._admin = admin_key

    def check_client(self, request: web.Request) -> None:
        if not self._keys:
            return
        token = bearer(request)
        if token is None:
            raise ApiError(
                401,
                "You didn't provide an API key (Authorization: Bearer <key>).",
                code="missing_api_key",
            )
        if not _matches(token, self._keys):
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")

    def check_admin(self, request: web.Request) -> None:
        if self._admin is None:
            raise ApiError(
                403,
                "the admin API is disabled (no auth.admin_key configured)",
                code="admin_disabled",
            )
        token = bearer(request)
        if token is None or not _matches(token, (self._admin,)):
            raise ApiError(
                401,
                "admin key required (Authorization: Bearer <admin key>)",
                code="invalid_admin_key",
            )
