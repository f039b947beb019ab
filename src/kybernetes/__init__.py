"""kybernetes: Kubernetes for machine-learning teams, in Python."""

__version__ = "0.1.0"
