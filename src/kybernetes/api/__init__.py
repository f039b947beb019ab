"""L1: the Kubernetes API as pure functions over plain dicts (the wire form). No I/O."""
