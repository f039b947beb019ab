"""Semantic validation of built-in kinds, one module per API group (registers on import).

Importing this package registers every group's validators with
:mod:`kybernetes.api.strategy`. Metadata checks, shared by all kinds and by custom
resources, are called by the API server directly::

    from kybernetes.api.validation import validate_metadata, validate_metadata_update
"""

from kybernetes.api.validation import (  # noqa: F401  (each module registers its kinds)
    apiextensions,
    apps,
    autoscaling,
    batch,
    certificates,
    coordination,
    core,
    discovery,
    kubeflow,
    networking,
    persistentvolume,
    podgroup,
    policy,
    rbac,
    scheduling,
    service,
    storage,
)
from kybernetes.api.validation.meta import validate_metadata, validate_metadata_update

__all__ = ["validate_metadata", "validate_metadata_update"]
