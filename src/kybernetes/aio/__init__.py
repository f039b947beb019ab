"""L0: tiny asyncio helpers with no kybernetes imports (tasks, clock, backoff)."""
