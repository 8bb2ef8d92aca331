"""modeldeploy's development tools: the local cluster (``python -m modeldeploy_dev.cluster``,
``make cluster``) and the demo (``python -m modeldeploy_dev.demo``, ``make demo``).

Installed by the ``dev`` extra from a source checkout; the operator package never imports it,
and neither image contains it.
"""
