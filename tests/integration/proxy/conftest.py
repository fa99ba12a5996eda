"""Fixtures for the proxy integration tests (helpers live in ``proxy_stack``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from proxy_stack import Stack, make_stack


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with make_stack() as s:
        yield s
