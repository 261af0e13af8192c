"""Autoscaling the model deployment by texts in flight, not requests (a Ray Serve custom policy).

The streaming job sends chunks of hundreds of texts per request, a dashboard one text: Ray Serve's
default policy (ongoing requests per replica against ``target_ongoing_requests``) would count both
alike. Each replica reports the texts it holds (queued for a batch or in the model) through
``record_autoscaling_stats`` (:data:`TEXTS_METRIC`); :class:`TextsInFlight` asks for as many
replicas as keep each at ``target_texts_per_replica``. Ray Serve applies the up/downscale delays
and factors of ``autoscaling_config`` around it (``ray.serve.autoscaling_policy.
_apply_autoscaling_config``), then min/max replicas (``_private/autoscaling_state.py``
``apply_bounds``), and averages the metric over ``look_back_period_s``.
"""

from __future__ import annotations

from typing import Any

TEXTS_METRIC = "texts_in_flight"
POLICY_PATH = "streamotion_serving.autoscaling:TextsInFlight"


class TextsInFlight:
    """``policy_function`` of ``autoscaling_config.policy``; ``policy_kwargs``:
    ``{"target_texts_per_replica": N}``. Until replicas report texts, the request-based rule."""

    def __init__(self, target_texts_per_replica: float = 256.0):
        if target_texts_per_replica <= 0:
            raise ValueError("target_texts_per_replica must be > 0")
        self.target = float(target_texts_per_replica)

    def __call__(self, ctx: Any) -> tuple[float, dict[str, Any]]:
        if ctx.current_num_replicas == 0:  # Ray's cold start path scales up from zero itself
            return ctx.target_num_replicas, {}
        per_replica = (ctx.aggregated_metrics or {}).get(TEXTS_METRIC) or {}
        if not per_replica:
            target_requests = ctx.config.get_target_ongoing_requests() * ctx.current_num_replicas
            return ctx.current_num_replicas * ctx.total_num_requests / target_requests, {}
        texts = float(sum(per_replica.values()))
        return desired_replicas(texts, self.target), {"texts_in_flight": texts}


def desired_replicas(texts_in_flight: float, target_texts_per_replica: float) -> float:
    """Replicas that hold ``target_texts_per_replica`` each (at least one while any text is in flight)."""
    if texts_in_flight <= 0:
        return 0.0
    return max(1.0, texts_in_flight / target_texts_per_replica)


def autoscaling_config(autoscaling: dict[str, Any], default_target: float) -> dict[str, Any]:
    """``build_app``'s ``autoscaling`` argument as Ray Serve's ``autoscaling_config``: our key
    ``target_texts_per_replica`` (default ``default_target``) becomes the custom policy; a given
    ``policy`` (Ray's own form) is kept as is."""
    cfg = dict(autoscaling)
    target = float(cfg.pop("target_texts_per_replica", default_target))
    if "policy" not in cfg:
        cfg["policy"] = {
            "policy_function": POLICY_PATH,
            "policy_kwargs": {"target_texts_per_replica": target},
        }
    return cfg
