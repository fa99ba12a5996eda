"""Pure policy core: request state, deadlines, decisions and policies. No I/O, no clock reads.

Everything here is driven with explicit values (a request, backend snapshots, ``now``) and
answers with values (decisions carrying reasons), so the live proxy and the simulator run
the same code.  Nothing in this package imports asyncio or aiohttp, reads a clock or draws
from the global random generator (``tests/unit/core/test_purity.py`` enforces it).
"""

from ascendra_proxy.core.backend import BackendInfo, BackendSnapshot, Role, ScrapedLoad
from ascendra_proxy.core.contracts import Policy
from ascendra_proxy.core.decisions import (
    Action,
    Assign,
    Decision,
    Dispatch,
    Drop,
    Hold,
    Move,
    Reject,
)
from ascendra_proxy.core.request import Outcome, Phase, RequestState, RequestStateError
from ascendra_proxy.core.slo import SLO, SLOError, SLOTable, resolve_slo

__all__ = [
    "SLO",
    "Action",
    "Assign",
    "BackendInfo",
    "BackendSnapshot",
    "Decision",
    "Dispatch",
    "Drop",
    "Hold",
    "Move",
    "Outcome",
    "Phase",
    "Policy",
    "Reject",
    "RequestState",
    "RequestStateError",
    "Role",
    "SLOError",
    "SLOTable",
    "ScrapedLoad",
    "resolve_slo",
]
