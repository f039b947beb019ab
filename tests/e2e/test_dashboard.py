"""The dashboard in a real browser (Debian's Chromium, driven by Playwright) against a
running ``kyb server`` with serve-model.yaml applied."""

from __future__ import annotations

import http.client
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.browser import (
    browser,
    goto,
    login,
    new_page,
    reload,
    require_browser,
    screenshot,
)
from tests.e2e.cluster import SCENARIOS, Cluster, agent_cluster, wait_for

pytestmark = pytest.mark.slow


VIEWER_TOKEN = "viewer-token-0123456789"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_browser()
    base = tmp_path_factory.mktemp("dashboard")
    (base / "tokens.csv").write_text(f"{VIEWER_TOKEN},viewer,uid-viewer\n")
    yield from agent_cluster(base, "--dashboard-interval", "1s", "--fake-gpus", "2",
                             "--token-auth-file", str(base / "tokens.csv"))


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> Cluster:
    """serve-model.yaml applied, its 3 replicas ready."""
    cluster.kubectl("apply", "-f", str(SCENARIOS / "serve-model.yaml"))
    cluster.kubectl("rollout", "status", "deployment/ml-model", "--timeout=90s", timeout=100)
    return cluster


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with browser() as b:
        yield b


def _pod(name: str, script: str, *, limits: dict[str, Any] | None = None) -> str:
    container: dict[str, Any] = {"name": "main", "image": "python:3.11",
                                 "command": ["python3", "-u", "-c", textwrap.dedent(script)]}
    if limits:
        container["resources"] = {"limits": limits}
    return yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                           "spec": {"restartPolicy": "Never", "containers": [container]}})


def _count(page: Any, selector: str) -> int:
    return int(page.eval_on_selector_all(selector, "els => els.length"))


def test_the_page_needs_a_token(cluster: Cluster) -> None:
    """The page itself is public (it holds no data); its API is not."""
    with httpx.Client(verify=False, timeout=10) as h:
        page = h.get(f"{cluster.url}/dashboard/")
        assert page.status_code == 200 and "<title>kybernetes</title>" in page.text
        assert h.get(f"{cluster.url}/dashboard", follow_redirects=False).status_code == 301
        watch = f"{cluster.url}/dashboard/api/watch?resources=/api/v1/pods"
        assert h.get(watch).status_code == 401
        r = h.get(watch, headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401 and r.json()["reason"] == "Unauthorized"
        r = h.get(f"{cluster.url}/dashboard/api/history/pods/default/x",
                  headers={"Authorization": "Bearer not-a-token"})
        assert r.status_code == 401
        assert h.get(f"{cluster.url}/dashboard/static/nope.js").status_code == 404
        # the static files stay inside the package's folder
        assert h.get(f"{cluster.url}/dashboard/static/%2e%2e/server.py").status_code == 404
        assert h.get(f"{cluster.url}/dashboard/static/app.js").headers[
            "content-type"].startswith("text/javascript")


def test_a_wrong_token_is_refused(cluster: Cluster, chromium: Any) -> None:
    page = new_page(chromium)
    login(page, cluster, "wrong-token")
    page.wait_for_function(
        "() => document.querySelector('#login-error').textContent.includes('Unauthorized')")
    assert page.is_visible("#login-form") and not page.is_visible("#page")
    screenshot(page, "login-refused")
    page.fill("#token", cluster.token)
    page.click("#login")
    page.wait_for_selector("#conn.live")
    assert page.is_visible("#page")
    page.context.close()


def test_overview_shows_the_three_ready_model_pods(served: Cluster, chromium: Any) -> None:
    page = new_page(chromium)
    login(page, served)
    row = "#overview-workloads tr[data-workload=ml-model]"
    page.wait_for_function(
        f"() => document.querySelector('{row} .ready')?.textContent === '3/3'")
    assert "Deployment" in page.inner_text(row)
    pods = served.kubectl_json("get", "pods", "-l", "app=ml-model")["items"]
    assert len(pods) == 3
    goto(page, f"{served.url}/dashboard/#/workloads")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-pods-of=ml-model] a.chip.ready').length === 3")
    shown = sorted(page.eval_on_selector_all("[data-pods-of=ml-model] a.chip",
                                             "els => els.map(e => e.dataset.pod)"))
    assert shown == sorted(p["metadata"]["name"] for p in pods)
    goto(page, f"{served.url}/dashboard/#/overview")
    page.wait_for_selector(row)
    screenshot(page, "overview")
    assert not page.js_errors
    page.context.close()


def test_scaling_from_the_page_shows_five_pods_without_reload(served: Cluster,
                                                             chromium: Any) -> None:
    page = new_page(chromium)
    login(page, served, path="#/workloads")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-pods-of=ml-model] a.chip.ready').length === 3")
    page.evaluate("() => { window.notReloaded = true; }")
    page.fill("#scale-Deployment-default-ml-model", "5")
    page.click("tr[data-workload=ml-model] form.scale button")
    page.wait_for_function(
        "() => document.querySelectorAll('[data-pods-of=ml-model] a.chip.ready').length === 5",
        timeout=90_000)
    # the Deployment's status follows its pods' readiness a moment later
    page.wait_for_function("() => document.querySelector('tr[data-workload=ml-model] .ready')"
                           ".textContent === '5/5'")
    assert page.evaluate("() => window.notReloaded") is True, "the page was reloaded"
    assert served.kubectl_json("get", "deployment", "ml-model")["spec"]["replicas"] == 5
    screenshot(page, "workloads")
    assert not page.js_errors
    page.context.close()


def test_the_log_view_follows_new_lines(served: Cluster, chromium: Any) -> None:
    served.kubectl("apply", "-f", "-", input=_pod("chatty", """
        import itertools, time
        for i in itertools.count():
            print(f"line {i}", flush=True)
            time.sleep(0.3)
        """))
    wait_for("chatty running", lambda: served.kubectl_json("get", "pod", "chatty")
             .get("status", {}).get("phase") == "Running", timeout=60)
    page = new_page(chromium)
    login(page, served, path="#/pod/default/chatty")
    page.wait_for_function("() => /line [0-9]+\\n/.test(document.querySelector('#logs')"
                           ".textContent)")
    first = _last_line(page.inner_text("#logs"))
    # new lines arrive on the open stream: no reload, no polling of the page
    page.wait_for_function(f"() => document.querySelector('#logs').textContent"
                           f".includes('line {first + 5}\\n')", timeout=20_000)
    assert _last_line(page.inner_text("#logs")) >= first + 5
    served.kubectl("delete", "pod", "chatty", "--wait=false")
    assert not page.js_errors
    page.context.close()


def _last_line(text: str) -> int:
    numbers = [int(line.split()[1]) for line in text.splitlines() if line.startswith("line ")]
    assert numbers, text[-500:]
    return numbers[-1]


def test_the_cpu_chart_of_a_cpu_burning_pod_rises(served: Cluster, chromium: Any) -> None:
    served.kubectl("apply", "-f", "-", input=_pod("burner", """
        import time
        time.sleep(8)          # idle first: the chart starts low
        while True:
            pass
        """))
    wait_for("burner running", lambda: served.kubectl_json("get", "pod", "burner")
             .get("status", {}).get("phase") == "Running", timeout=60)
    page = new_page(chromium)
    login(page, served, path="#/pod/default/burner")
    page.wait_for_function("() => +document.querySelector('#cpu-chart').dataset.points >= 2",
                           timeout=30_000)
    start = float(page.get_attribute("#cpu-chart", "data-latest") or "nan")
    page.wait_for_function(
        "() => +document.querySelector('#cpu-chart').dataset.latest > 0.5", timeout=60_000)
    points = page.eval_on_selector("#cpu-chart polyline", "e => e.getAttribute('points')")
    heights = [float(p.split(",")[1]) for p in points.split()]
    assert start < 0.2, f"the idle burner already used {start} cores"
    assert min(heights[-3:]) < max(heights[:2]), "the line did not rise"  # SVG y grows down
    screenshot(page, "pod")
    served.kubectl("delete", "pod", "burner", "--wait=false")
    assert not page.js_errors
    page.context.close()


def test_a_view_only_token_sees_its_namespace_and_cannot_scale(served: Cluster,
                                                                chromium: Any) -> None:
    """The page does what the token may do: RBAC's view in "default" only."""
    c = served
    c.kubectl("create", "rolebinding", "viewer-view", "--clusterrole=view", "--user=viewer",
              "-n", "default")
    replicas = c.kubectl_json("get", "deployment", "ml-model")["spec"]["replicas"]
    page = new_page(chromium)
    login(page, c, VIEWER_TOKEN, path="#/workloads")
    page.wait_for_selector("#forbidden")  # nothing may be listed in all namespaces
    assert "pods" in page.inner_text("#forbidden")
    assert _count(page, "tr[data-workload]") == 0
    page.fill("#ns", "default")
    page.dispatch_event("#ns", "change")
    page.wait_for_selector("tr[data-workload=ml-model]")
    page.wait_for_function(
        f"() => document.querySelectorAll('[data-pods-of=ml-model] a.chip').length === "
        f"{replicas}")
    assert not page.is_visible("#forbidden") or "pods" not in page.inner_text("#forbidden")
    page.fill("#scale-Deployment-default-ml-model", str(replicas + 1))
    page.click("tr[data-workload=ml-model] form.scale button")
    page.wait_for_selector("#banner:not([hidden])")
    assert ('deployments.apps "ml-model" is forbidden: User "viewer" cannot patch resource '
            '"deployments/scale" in API group "apps" in the namespace "default"'
            ) in page.inner_text("#banner")
    screenshot(page, "workloads-view-only")
    assert c.kubectl_json("get", "deployment", "ml-model")["spec"]["replicas"] == replicas
    page.context.close()


def test_a_failing_job_shows_its_failure_reason(served: Cluster, chromium: Any) -> None:
    served.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train-broken"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{
                "name": "train", "image": "python:3.11",
                "command": ["python3", "-c", "import sys; sys.exit(3)"]}]}}}}))
    page = new_page(chromium)
    login(page, served, path="#/workloads")
    row = "tr[data-workload=train-broken]"
    page.wait_for_function(
        f"() => document.querySelector('{row} .status')?.textContent.includes("
        f"'BackoffLimitExceeded')", timeout=60_000)
    assert "Failed: BackoffLimitExceeded" in page.inner_text(f"{row} .status")
    assert "warn" in (page.get_attribute(row, "class") or "")
    page.wait_for_function("() => document.querySelector("
                           "'[data-pods-of=train-broken] a.chip')?.dataset.status === 'Error'")
    goto(page, f"{served.url}/dashboard/#/overview")
    page.wait_for_function("() => document.querySelector("
                           "'#overview-workloads tr[data-workload=train-broken] .status')"
                           "?.textContent.includes('BackoffLimitExceeded')")
    screenshot(page, "overview-failed-job")
    page.context.close()


def test_nodes_services_and_namespaces_pages(served: Cluster, chromium: Any) -> None:
    """GPU shares per device, Services' endpoints, a namespace's quota."""
    c = served
    c.kubectl("apply", "-f", "-", input=_pod("gpu-share", "import time; time.sleep(3600)",
                                              limits={"kybernetes.io/gpu-milli": 300}))
    c.kubectl("create", "namespace", "team-a")
    c.kubectl("apply", "-f", "-", input=yaml.safe_dump({
        "apiVersion": "v1", "kind": "ResourceQuota",
        "metadata": {"name": "compute", "namespace": "team-a"},
        "spec": {"hard": {"pods": "20", "requests.cpu": "4", "requests.memory": "8Gi"}}}))
    page = new_page(chromium)
    login(page, c, path="#/nodes")
    node = f"tr[data-node={c.node_name}]"
    page.wait_for_function(f"() => document.querySelector('{node} .device[data-device=\"0\"]')"
                           f"?.textContent.includes('300')", timeout=60_000)
    assert "gpu-share 300m" in page.inner_text(f"{node} .gpus")
    screenshot(page, "nodes")

    goto(page, f"{c.url}/dashboard/#/services")
    ready = [p for p in c.kubectl_json("get", "pods", "-l", "app=ml-model")["items"]
             if any(x["type"] == "Ready" and x["status"] == "True"
                    for x in p["status"].get("conditions", []))]
    page.wait_for_function(f"() => document.querySelectorAll('tr[data-service=ml-model] "
                           f".chip.ready').length === {len(ready)}")
    shown = page.eval_on_selector_all("tr[data-service=ml-model] .chip.ready",
                                      "els => els.map(e => e.textContent)")
    assert sorted(shown) == sorted(p["status"]["podIP"] for p in ready)

    goto(page, f"{c.url}/dashboard/#/namespaces")
    quota = "tr[data-namespace=team-a] .quota[data-quota=compute]"
    page.wait_for_function(f"() => document.querySelector('{quota}')?.textContent"
                           f".includes('pods')", timeout=30_000)
    assert "/ 20" in page.inner_text(quota)
    screenshot(page, "namespaces")
    c.kubectl("delete", "pod", "gpu-share", "--wait=false")
    assert not page.js_errors
    page.context.close()


def _post(c: Cluster, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", c.ingress_port, timeout=10)
    try:
        conn.request("POST", path, body=b'{"features": [1, 2, 3]}', headers=headers or {})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def test_canary_split_and_per_variant_traffic(served: Cluster, chromium: Any) -> None:
    """ab-test.yaml: the canary Ingress's weight shown as a split, and each variant's
    request rate, error rate and latency as the ingress controller measured them."""
    c = served
    c.kubectl("apply", "-f", str(SCENARIOS / "ab-test.yaml"))
    for d in ("model1", "model2"):
        c.kubectl("rollout", "status", f"deployment/{d}", "--timeout=90s", timeout=100)
    refused: list[int] = []  # 503s while the new endpoints are not ready yet: errors

    def reached() -> bool:
        codes = [_post(c, "/predict"), _post(c, "/predict", {"x-variant": "v2"})]
        refused.extend(code for code in codes if code != 200)
        return codes == [200, 200]

    wait_for("the ingress to reach the models", reached)
    for i in range(40):  # bounded: 40 requests, half of them to the canary by header
        assert _post(c, "/predict", {"x-variant": "v2"} if i % 2 else None) == 200
    page = new_page(chromium)
    login(page, c, path="#/services")
    split = "table[data-canary=dlp-canary]"
    page.wait_for_selector(split)
    text = page.inner_text(split)
    assert "model1 90%" in text and "model2 10%" in text and "x-variant: v2" in text
    errors = 0.0
    for variant in ("model1", "model2"):
        row = f"{split} tr[data-variant={variant}]"
        page.wait_for_function(f"() => parseFloat(document.querySelector('{row} td:nth-child(3)')"
                               f"?.textContent) > 0", timeout=30_000)
        cells = page.eval_on_selector_all(f"{row} td", "els => els.map(e => e.textContent)")
        assert cells[4].endswith(" ms"), cells
        errors += float(cells[3].removesuffix(" errors/s"))
    # rates over the last 1 to 30 s: the 503s seen while waiting, nothing else
    assert (errors > 0) == bool(refused) and errors <= len(refused), (errors, refused)
    screenshot(page, "services")
    assert not page.js_errors
    page.context.close()


def test_metrics_history_endpoints(served: Cluster) -> None:
    """The charts' data: per pod and per node, sampled by the server."""
    pod = served.kubectl_json("get", "pods", "-l", "app=ml-model")["items"][0]["metadata"]["name"]
    with served.http() as h:
        h.timeout = 10

        def series(path: str) -> Any:
            body = h.get(f"/dashboard/api/history/{path}").json()
            return body if len(body["t"]) >= 2 and body["values"] else None

        body = wait_for("pod history", lambda: series(f"pods/default/{pod}"), timeout=30)
        assert body["interval"] == 1.0
        cpu, mem = body["values"]
        assert len(cpu) == len(mem) == len(body["t"])
        assert all(t2 > t1 for t1, t2 in zip(body["t"], body["t"][1:], strict=False))
        assert any(c is not None and c >= 0 for c in cpu)
        assert any(m and m > 1e6 for m in mem)  # a Python process has a few MB
        node = wait_for("node history", lambda: series(f"nodes/{served.node_name}"))
        assert any(v and v > 0 for v in node["values"][0])
        latest = h.get("/dashboard/api/latest/pods").json()
        assert f"default/{pod}" in latest
        assert h.get("/dashboard/api/history/pods/default").status_code == 404


def test_page_load_with_1000_pods_on_fake_nodes(tmp_path: Path, chromium: Any) -> None:
    """Measured in the browser and written out for bench/README.md; not asserted as a
    timing (point 3 of the issue)."""
    from tests.e2e.cluster import fake_node_cluster

    gen = fake_node_cluster(tmp_path, 10)
    c = next(gen)
    try:
        c.kubectl("create", "deployment", "many", "--image=python:3.11", "--replicas=1000")
        wait_for("1000 pods running", lambda: c.kubectl_json(
            "get", "deployment", "many").get("status", {}).get("readyReplicas") == 1000,
            timeout=240, every=2)
        page = new_page(chromium)
        login(page, c)
        page.wait_for_function("() => document.querySelector('[data-testid=pods-count]')"
                               "?.textContent === '1000'")
        results: dict[str, Any] = {"pods": 1000, "nodes": 10}
        for name in ("overview", "workloads", "nodes"):
            goto(page, f"{c.url}/dashboard/#/{name}")
            reload(page)  # the token stays in the session: a full load, no login
            page.wait_for_function(
                "() => performance.getEntriesByName('kyb-first-render').length > 0")
            results[f"{name}_load_ms"] = round(page.evaluate(
                "() => performance.getEntriesByName('kyb-first-render')[0].startTime"), 1)
        # a change to every pod re-renders the page a few times: how long each render takes
        goto(page, f"{c.url}/dashboard/#/workloads")
        page.evaluate("() => window.kybRenderTimes.length = 0")
        c.kubectl("label", "pods", "--all", "touched=yes")
        page.wait_for_function("() => window.kybRenderTimes.length >= 2")
        times = sorted(page.evaluate("() => window.kybRenderTimes"))
        results["workloads_render_ms_max"] = round(times[-1], 1)
        results["workloads_render_ms_median"] = round(times[len(times) // 2], 1)
        screenshot(page, "workloads-1000-pods")
        print("DASHBOARD-LOAD " + json.dumps(results))
        out = Path(__file__).resolve().parents[2] / "build" / "dashboard-load.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
        chips = page.eval_on_selector_all("[data-pods-of=many] a.chip", "e => e.length")
        assert chips == 60 and "and 940 more" in page.inner_text("[data-pods-of=many]")
        assert page.inner_text("tr[data-workload=many] .ready") == "1000/1000"
        page.context.close()
    finally:
        gen.close()
