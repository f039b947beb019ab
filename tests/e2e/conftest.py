"""Fixtures that start real ``kyb server`` processes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import KUBECTL, SCENARIOS, Cluster, free_port


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """End-to-end tests need the real kubectl and the shared scenarios: say so if missing."""
    missing = []
    if not Path(KUBECTL).exists():
        missing.append(f"kubectl 1.32 at {KUBECTL} (set KUBECTL=...)")
    if not SCENARIOS.is_dir():
        missing.append(f"the shared scenarios at {SCENARIOS}")
    if missing:
        skip = pytest.mark.skip(reason="end-to-end prerequisite missing: " + "; ".join(missing))
        for item in items:
            if "e2e" in str(item.fspath):
                item.add_marker(skip)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]
                              ) -> Iterator[None]:
    """When an end-to-end test fails, say what the cluster looked like: pods, recent events
    and the end of the server's log (CI runs leave nothing else behind)."""
    report = yield
    if report.when == "call" and report.failed:  # type: ignore[attr-defined]
        for name in ("cluster", "fresh_cluster", "gpu_cluster", "fake_cluster", "fake"):
            c = getattr(item, "funcargs", {}).get(name)
            if isinstance(c, Cluster):
                report.sections.append((f"cluster state ({name})", _state(c)))  # type: ignore[attr-defined]
    return report  # type: ignore[no-any-return]


def _state(c: Cluster) -> str:
    out = []
    for args in (("get", "pods", "-A", "-o", "wide"),
                 ("get", "events", "-A", "--sort-by=.lastTimestamp")):
        try:
            p = c.kubectl(*args, check=False, timeout=10)
            out.append(f"$ kubectl {' '.join(args)}\n{p.stdout[-6000:]}{p.stderr[-2000:]}")
        except Exception as e:  # diagnostics must not hide the failure
            out.append(f"$ kubectl {' '.join(args)}: {e}")
    try:
        out.append("server log (end):\n" + c.log_path.read_text()[-6000:])
    except OSError as e:
        out.append(f"server log: {e}")
    return "\n".join(out)


def _cluster(base: Path) -> Cluster:
    c = Cluster(data_dir=base / "data", port=free_port(), log_path=base / "server.log",
                cache_dir=base / "home")
    c.cache_dir.mkdir(parents=True, exist_ok=True)
    return c


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One server shared by a whole test session (tests use their own namespaces)."""
    c = _cluster(tmp_path_factory.mktemp("cluster"))
    c.start()
    yield c
    code = c.stop()
    c.killall()
    assert code == 0, f"kyb server did not exit cleanly on SIGTERM ({code})"


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """A server of the test's own (for restarts and crashes)."""
    c = _cluster(tmp_path)
    c.start()
    yield c
    c.stop()
    c.killall()


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A namespace of the test's own, deleted afterwards."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    name = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in name).strip("-")
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
