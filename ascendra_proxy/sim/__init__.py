"""Discrete-event simulator: the core policies against the engine model, in virtual time.

The simulator is a third driver of the same code the live proxy runs: requests are core
``RequestState`` values, decisions come from the policy the config names (built through the
core registry), and every backend is an ``engine.EngineModel`` with its latency profile.
What the live proxy experiences outside the engines is modelled with explicit constants
(network hops, abort delay, scrape interval and staleness, the monitor tick).

Modules: :mod:`.events` (the clock), :mod:`.setup` (configs, policy overrides),
:mod:`.backend` and :mod:`.flight` (per-backend and per-request state), :mod:`.proxy` (the
policy's driver), :mod:`.simulator` (the event loop), :mod:`.report` and :mod:`.table`
(loadgen-compatible output), :mod:`.sweep` (points, sweeps, variants, workers), :mod:`.cli`.
"""

from ascendra_proxy.sim.setup import SimConfig, SimSettings, load_sim_config, with_policy
from ascendra_proxy.sim.simulator import SimResult, Simulator

__all__ = ["SimConfig", "SimResult", "SimSettings", "Simulator", "load_sim_config", "with_policy"]
