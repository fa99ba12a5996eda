"""Client and admin authentication (``Authorization: Bearer <key>``).

Theory of operation: with ``auth.api_keys`` or ``auth.clients`` configured, every ``/v1/*``
request must carry one of those keys; with none configured the API is open.  ``check_client``
returns the caller's ``SLOAccess``: its ``auth.clients`` entry, else
``auth.default_slo_access`` (by default every class, no override tighter than its class).
A header that is not valid UTF-8 is simply a key that matches nothing.  ``/admin/*`` needs
``auth.admin_key`` and is disabled (403) when no admin key is configured.  Keys are
compared in constant time.  Client credentials are never forwarded upstream: the proxy
talks to backends with each backend's own configured key.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from aiohttp import web

from ascendra_proxy.core.slo import SLOAccess
from ascendra_proxy.proxy.errors import ApiError

DEFAULT_ACCESS = SLOAccess()


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _key_bytes(text: str) -> bytes:
    # aiohttp keeps undecodable header bytes as surrogates: compare them as the bytes they were
    return text.encode("utf-8", "surrogateescape")


def _match(token: str, keys: Sequence[bytes]) -> int | None:
    """Index of the key ``token`` equals, compared in constant time against every key."""
    given = _key_bytes(token)
    found = None
    for i, key in enumerate(keys):
        if hmac.compare_digest(given, key) and found is None:
            found = i
    return found


class Auth:
    def __init__(
        self,
        api_keys: Sequence[str],
        admin_key: str | None,
        clients: Sequence[tuple[str, SLOAccess]] = (),
        default_access: SLOAccess = DEFAULT_ACCESS,
    ) -> None:
        self._default = default_access
        keyed = [(k, default_access) for k in api_keys] + list(clients)
        self._keys = tuple(_key_bytes(k) for k, _ in keyed)
        self._access = tuple(a for _, a in keyed)
        self._admin = None if admin_key is None else _key_bytes(admin_key)

    def check_client(self, request: web.Request) -> SLOAccess:
        """The caller's SLO access; raises 401 without a valid key (when keys are configured)."""
        if not self._keys:
            return self._default
        token = bearer(request)
        if token is None:
            raise ApiError(
                401,
                "You didn't provide an API key (Authorization: Bearer <key>).",
                code="missing_api_key",
            )
        found = _match(token, self._keys)
        if found is None:
            raise ApiError(401, "Incorrect API key provided.", code="invalid_api_key")
        return self._access[found]

    def check_admin(self, request: web.Request) -> None:
        if self._admin is None:
            raise ApiError(
                403,
                "the admin API is disabled (no auth.admin_key configured)",
                code="admin_disabled",
            )
        token = bearer(request)
        if token is None or _match(token, (self._admin,)) is None:
            raise ApiError(
                401,
                "admin key required (Authorization: Bearer <admin key>)",
                code="invalid_admin_key",
            )
