"""The actions of the ``ascendra`` policy beyond the core's Assign/Move/Drop, and its reasons.

Theory of operation.  ``tick`` returns the core's :class:`~ascendra_proxy.core.decisions.Assign`
(bind a held request late to a backend) and :class:`~ascendra_proxy.core.decisions.Move`
(``kind="offload"`` before the first token, ``kind="migrate"`` mid-stream), plus two actions
that do not move a request:

* :class:`Warm` - send request ``request_id``'s prompt to ``backend`` as a separate
  one-token generation (``max_tokens=1``), discard its output and do not count it as the
  request; it only fills that engine's prefix cache so a later offload prefills little.
* :class:`SetRole` - backend ``backend`` changes role.  ``draining=True``: it has left its
  old role (the policy sends it nothing of that role any more) and takes the new one once
  drained; ``draining=False``: the new role is in effect.  Roles are the policy's own
  state; the driver only mirrors them (metrics, status page, traces).

Reasons are short, stable tokens (Prometheus label values); they are all listed here.
"""

from __future__ import annotations

from typing import TypeAlias

from ascendra_proxy.core.decisions import Action, SetRole, Warm

__all__ = ["AscendraAction", "Reason", "SetRole", "Warm"]

# Kept as a name for readability at call sites; every action is a core action now.
AscendraAction: TypeAlias = Action


class Reason:
    """Every reason the policy gives (a namespace of string constants)."""

    # route() / Assign
    HP_TICKET = "hp_ticket"  # fresh request admitted to HP by the ticket rule
    LP_ROOM = "lp_room"  # LP backend has room under its queue cap (proxy_queue)
    LP_PRIORITY = "lp_priority"  # dispatched at once with a deadline priority
    HELD = "held_edf"  # waiting in the proxy's EDF queue
    NO_LP = "no_lp_backend"  # no usable LP backend: HP takes it
    TBT_FIT = "tbt_fit"  # its mean-TBT SLO fits no LP step, an HP one (see module tbt)
    FAILOVER = "failover"  # a stream whose backend failed continues elsewhere
    # Move(kind="offload")
    OFFLOAD_TTFT = "offload_ttft"  # predicted TTFT + margin breaks the deadline
    OFFLOAD_BACKEND_DOWN = "offload_backend_down"  # not started, backend unhealthy
    # Move(kind="migrate")
    MIGRATE_TBT = "migrate_tbt"  # mean TBT heading over SLO, moving pays
    MIGRATE_BACKEND_DOWN = "migrate_backend_down"  # streaming, backend unhealthy
    # Drop (core.admission: late everywhere, and the request's class opted in to refusal)
    SHED = "shed"
    # Warm
    WARM_SLACK = "warm_low_slack"
    # SetRole
    ROLE_GROW_HP = "role_grow_hp"
    ROLE_SHRINK_HP = "role_shrink_hp"
    ROLE_DRAINED = "role_drained"
    ROLE_DRAIN_TIMEOUT = "role_drain_timeout"
