"""L3: the Kubernetes REST API over HTTP(S), generic over the resource registry."""
