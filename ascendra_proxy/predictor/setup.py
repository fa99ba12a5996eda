"""What drivers (the live proxy, ``simulate``) need to plug the learned predictor in.

Theory of operation.  :func:`~.model.load_predictor` wants the analytical model to fall
back on; :func:`analytical_fallback` builds the same one the Ascendra policy builds for
itself (the backends' latency profiles, the policy's ``fallback_step_s`` and
``max_scrape_age_s``), so a policy answering from the fallback behaves exactly as with no
learned model at all.  :func:`takes_predictor` tells whether a policy has a slack
predictor to swap (the Ascendra policy; the baselines have none).
"""

from __future__ import annotations

from typing import Protocol, TypeGuard, runtime_checkable

from ascendra_proxy.config import ProxyConfig
from ascendra_proxy.core.predict import AnalyticalPredictor, SlackPredictor, StepTimeModel

__all__ = ["PredictorPolicy", "analytical_fallback", "takes_predictor"]


@runtime_checkable
class PredictorPolicy(Protocol):
    """A policy whose slack predictor can be swapped (``AscendraPolicy``)."""

    @property
    def predictor_source(self) -> str: ...

    def use_predictor(self, predictor: SlackPredictor | None) -> None: ...


def takes_predictor(policy: object) -> TypeGuard[PredictorPolicy]:
    return isinstance(policy, PredictorPolicy)


def analytical_fallback(cfg: ProxyConfig) -> AnalyticalPredictor:
    """The analytical model the configured Ascendra policy uses (its defaults otherwise)."""
    from ascendra_proxy.core.policies.ascendra import AscendraParams
    from ascendra_proxy.engine.profile import load_profile

    params = cfg.policy.params
    if not isinstance(params, AscendraParams):
        params = AscendraParams()
    models: dict[str, StepTimeModel] = {}
    for _pool, b in cfg.backends():
        profile = b.engine_settings.profile
        if profile and profile not in models:
            models[profile] = load_profile(profile)
    return AnalyticalPredictor(models, params.fallback_step_s, params.max_scrape_age_s)
