"""Canary rollouts: a pure step function, and small ports for metrics and traffic.

``plan.advance`` takes the spec, the rollout state kept in ``status`` and what was observed
this tick, and returns the next state with what the reconciler must do (Flagger / Argo Rollouts
style). ``analysis`` reads Prometheus; ``traffic`` sizes the tracks and builds the HTTPRoute.
"""

from modeldeploy.rollout.plan import Decision, Observations, Target, advance, analysis_due

__all__ = ["Decision", "Observations", "Target", "advance", "analysis_due"]
