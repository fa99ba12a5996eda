"""Pool-layout rules a policy can attach to its registry entry (``PolicySpec.check_topology``).

:func:`hp_needs_lp` is the LP/HP rule of the Ascendra design: HP backends only take work
offloaded from LP backends (plus the occasional ticket), so a layout with HP backends must
have LP backends, and every model an HP backend serves must also be served in LP (otherwise
requests for it would have nowhere to start).  Layouts without HP backends pass.  Each
check returns a message for the config error, or None when the layout is fine.
"""

from __future__ import annotations

from collections.abc import Sequence

from ascendra_proxy.core.backend import BackendInfo, Role

__all__ = ["hp_needs_lp"]


def hp_needs_lp(params: object, backends: Sequence[BackendInfo]) -> str | None:
    hp_models = {b.model for b in backends if b.role is Role.HP}
    if not hp_models:
        return None
    lp_models = {b.model for b in backends if b.role is Role.LP}
    if not lp_models:
        return "this policy needs an lp pool with backends when an hp pool has backends"
    orphans = sorted(hp_models - lp_models)
    if orphans:
        return f"models served in hp but not in lp: {', '.join(orphans)}"
    return None
