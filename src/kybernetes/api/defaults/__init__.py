"""Defaulting of built-in kinds, one module per API group (registers on import).

Importing this package registers every group's defaulters (and the create/update hooks
that mirror upstream's ``PrepareForCreate``/``PrepareForUpdate``) with
:mod:`kybernetes.api.strategy`. Pod-spec defaults shared by all workload kinds are in
:mod:`kybernetes.api.defaults.podspec`.
"""

from kybernetes.api.defaults import (  # noqa: F401  (each module registers its kinds)
    apiextensions,
    apps,
    autoscaling,
    batch,
    core,
    discovery,
    kubeflow,
    networking,
    rbac,
    scheduling,
    storage,
)
