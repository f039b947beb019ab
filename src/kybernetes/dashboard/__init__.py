"""The web dashboard ``kyb server`` serves at ``/dashboard/`` (see :mod:`.server`)."""

from kybernetes.dashboard.server import Dashboard

__all__ = ["Dashboard"]
