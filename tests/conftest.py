"""Shared test fixtures: every coroutine test fails if it leaves asyncio tasks running."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator

import pytest


@pytest.fixture
async def no_task_leaks() -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running."""
    before = asyncio.all_tasks()
    yield
    left = asyncio.all_tasks() - before - {asyncio.current_task()}
    if left:
        _, pending = await asyncio.wait(left, timeout=1.0)
        assert not pending, f"leaked tasks: {pending}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        fn = getattr(item, "function", None)
        names = getattr(item, "fixturenames", None)
        if fn is not None and inspect.iscoroutinefunction(fn) and names is not None \
                and "no_task_leaks" not in names:
            names.insert(0, "no_task_leaks")
