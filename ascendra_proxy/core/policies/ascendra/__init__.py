"""The ``ascendra`` policy (design note written below, kept in sync with the code)."""

from ascendra_proxy.core.policies.ascendra.actions import AscendraAction, Reason, SetRole, Warm
from ascendra_proxy.core.policies.ascendra.params import AscendraParams
from ascendra_proxy.core.policies.ascendra.policy import AscendraPolicy, make_ascendra

__all__ = [
    "AscendraAction",
    "AscendraParams",
    "AscendraPolicy",
    "Reason",
    "SetRole",
    "Warm",
    "make_ascendra",
]
