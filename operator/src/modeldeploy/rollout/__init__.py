"""Canary rollouts: a pure step function, and small ports for metrics and model metadata.

``plan.advance`` takes the spec, the rollout state kept in ``status`` and what was observed
this tick, and returns the next state with what the reconciler must do (Flagger / Argo Rollouts
style); ``canary`` runs one tick of an active canary, ``steps`` walks its steps (one function
per kind of step), ``tick`` holds what a tick works on, ``state`` the vocabulary. The ports:
``analysis.Prometheus`` reads the checks, ``contract.ServerMetadata`` a serving pod's model
metadata. Pure judgement: ``contract.differences`` (what a canary breaks), ``verdicts`` (bounds,
minimum samples), ``statistics`` (the drift distance and its test).
"""

from modeldeploy.rollout.plan import Decision, Observations, advance, analysis_due

__all__ = ["Decision", "Observations", "advance", "analysis_due"]
