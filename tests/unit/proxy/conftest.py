"""Fixtures for the proxy unit tests (helpers live in ``proxy_rig``)."""

from __future__ import annotations

import pytest
from proxy_rig import RigFactory, rig


@pytest.fixture
def make_rig() -> RigFactory:
    return rig
