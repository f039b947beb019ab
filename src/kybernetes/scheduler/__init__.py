"""L4: the scheduler: a queue, a node cache, and the scheduling framework with its plugins."""
