"""modeldeploy: run machine-learning models in production on Kubernetes."""

__version__ = "0.1.0"
