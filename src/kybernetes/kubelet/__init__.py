"""L4: the node agent (kubelet): registers its Node, heartbeats, and runs the pods bound to it."""
