"""L4: controllers, one module each, reconciling through the API."""
