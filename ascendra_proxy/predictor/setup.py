"""What drivers (the live proxy, ``simulate``) need to plug the learned predictor in.

Theory of operation.  :func:`~.model.load_predictor` wants the analytical model to fall
back on; :func:`analytical_fallback` builds the same one the configured policy builds for
itself (the backends' latency profiles, and the policy's declared
:class:`~ascendra_proxy.core.contracts.PredictorNeeds`: ``fallback_step_s`` and
``max_scrape_age_s``), so a policy answering from the fallback behaves exactly as with no
learned model at all.  Whether a policy has a slack predictor to swap is declared in the
registry (``PolicyNeeds.predictor``) and, for a built policy object, the
:class:`~ascendra_proxy.core.contracts.SwapPredictor` protocol (:func:`takes_predictor`).
"""

from __future__ import annotations

from typing import TypeGuard

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.contracts import SwapPredictor, swaps_predictor
from ascendra_proxy.core.predict import AnalyticalPredictor

__all__ = ["PredictorPolicy", "analytical_fallback", "takes_predictor"]

PredictorPolicy = SwapPredictor  # the protocol lives in core/contracts.py


def takes_predictor(policy: object) -> TypeGuard[SwapPredictor]:
    return swaps_predictor(policy)


def analytical_fallback(cfg: ProxyConfig) -> AnalyticalPredictor:
    """The analytical model the configured policy uses; a ValueError when the configured
    policy declares no slack predictor (there is nothing to fall back to)."""
    needs = cfg.policy_needs().predictor
    if needs is None:
        raise ValueError(f"policy {cfg.policy.type!r} has no slack predictor")
    return AnalyticalPredictor(
        cfg.latency_profiles(), needs.fallback_step_s, needs.max_scrape_age_s
    )
