"""EventRecorder against the real API server in-process: aggregation of repeats, and
post() sending in the background, in order, flushed by aclose()."""

from __future__ import annotations

from typing import Any

from kybernetes.client import Client
from kybernetes.client.events import EventRecorder

POD: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": "default", "uid": "u-1"}}


async def _events(client: Client) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await client.list("v1", "events", namespace="default"))[
        "items"]
    return sorted(items, key=lambda e: e["metadata"]["name"])


async def test_repeats_are_counted_on_the_first_event(client: Client) -> None:
    rec = EventRecorder(client, "kubelet", host="n1")
    for _ in range(3):
        await rec.emit(POD, "Warning", "BackOff", "Back-off restarting failed container")
    [ev] = await _events(client)
    assert ev["count"] == 3 and ev["involvedObject"]["uid"] == "u-1"
    assert ev["source"] == {"component": "kubelet", "host": "n1"}


async def test_post_sends_in_order_in_the_background(client: Client) -> None:
    rec = EventRecorder(client, "kubelet")
    reasons = ["Pulled", "Created", "Started", "Killing"]
    for r in reasons:
        rec.post(POD, "Normal", r, f"{r} container main")
    await rec.aclose()  # sends what is queued, then stops
    events = await _events(client)
    assert [e["reason"] for e in events] == reasons  # names sort by creation time
    rec.post(POD, "Normal", "Pulled", "again")  # usable after aclose: starts a new sender
    await rec.aclose()
    assert len(await _events(client)) == 5


async def test_hold_delays_sending_not_the_recorded_time(client: Client,
                                                         monkeypatch: Any) -> None:
    """While ``hold`` says so, posted events wait (at most HOLD_MAX), keeping the time they
    were posted at."""
    import asyncio

    from kybernetes.client import events

    busy = True
    rec = EventRecorder(client, "kubelet", hold=lambda: busy)
    before = events.rfc3339()
    rec.post(POD, "Normal", "Started", "Started container main")
    posted = {before, events.rfc3339()}
    await asyncio.sleep(0.3)
    assert await _events(client) == []  # held
    await asyncio.sleep(1.1)  # the clock ticks past the posting second
    busy = False
    await rec.aclose()
    [ev] = await _events(client)
    assert ev["firstTimestamp"] == ev["lastTimestamp"] and ev["firstTimestamp"] in posted
    # held at most HOLD_MAX seconds
    monkeypatch.setattr(events, "HOLD_MAX", 0.2)
    busy = True
    rec.post(POD, "Normal", "Killing", "Stopping container main")
    await asyncio.sleep(0.6)
    assert [e["reason"] for e in await _events(client)] == ["Started", "Killing"]
    await rec.aclose()
