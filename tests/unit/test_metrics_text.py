"""The API server's own metric families, written without prometheus_client's formatter,
parse as the Prometheus text format with the values counted."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from kybernetes.apiserver.metrics import Metrics


def _families(m: Metrics) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    out: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out.setdefault(fam.name, {})[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_request_and_store_families() -> None:
    m = Metrics()
    for seconds in (0.001, 0.02, 0.3, 120.0):
        m.observe("GET", "", "v1", "pods", "", 200, seconds)
    m.observe("GET", "", "v1", "pods", "", 404, 0.002)
    m.observe("PATCH", "apps", "v1", "deployments", "status", 200, 0.007)
    m.observe("LIST", "", "v1", "nodes", "", 200, 0.0)
    count_hist = m._requests[("LIST", "", "v1", "nodes", "", 200)]
    count_hist[0] = count_hist[1].counts[0] = 1_234_567  # Go's exponent form past a million
    m.observe_store("create", "/registry/pods/default/a", 0.0003)
    fams = _families(m)
    total = fams["apiserver_request"]
    base = (("group", ""), ("resource", "pods"), ("subresource", ""), ("verb", "GET"),
            ("version", "v1"))
    assert total[("apiserver_request_total", tuple(sorted((*base, ("code", "200")))))] == 4
    assert total[("apiserver_request_total", tuple(sorted((*base, ("code", "404")))))] == 1
    lat = fams["apiserver_request_duration_seconds"]
    # the codes of one label set merged; cumulative buckets
    assert lat[("apiserver_request_duration_seconds_count", base)] == 5
    assert lat[("apiserver_request_duration_seconds_bucket",
                tuple(sorted((*base, ("le", "0.005")))))] == 2
    assert lat[("apiserver_request_duration_seconds_bucket",
                tuple(sorted((*base, ("le", "0.5")))))] == 4
    assert lat[("apiserver_request_duration_seconds_bucket",
                tuple(sorted((*base, ("le", "+Inf")))))] == 5
    assert abs(lat[("apiserver_request_duration_seconds_sum", base)] - 120.323) < 1e-9
    nodes = (("group", ""), ("resource", "nodes"), ("subresource", ""), ("verb", "LIST"),
             ("version", "v1"))
    assert lat[("apiserver_request_duration_seconds_count", nodes)] == 1_234_567
    assert b'apiserver_request_duration_seconds_count{verb="LIST",group="",version="v1",' \
        b'resource="nodes",subresource=""} 1.234567e+06' in m.render()
    store = fams["etcd_request_duration_seconds"]
    key = (("operation", "create"), ("type", "pods"))
    assert store[("etcd_request_duration_seconds_count", key)] == 1
    assert store[("etcd_request_duration_seconds_bucket", tuple(sorted((*key, ("le", "0.0005")))))
                 ] == 1
    # the watch gauge still comes from prometheus_client's registry, after these
    m.watch_gauge("", "v1", "pods").inc()
    assert _families(m)["apiserver_longrunning_requests"][
        ("apiserver_longrunning_requests", (("group", ""), ("resource", "pods"), ("verb", "WATCH"),
                                            ("version", "v1")))] == 1


def test_label_values_are_escaped() -> None:
    m = Metrics()
    m.observe("GET", "", "v1", 'we"ird\\name', "", 200, 0.001)
    fams = _families(m)
    assert any(dict(k[1]).get("resource") == 'we"ird\\name'
               for k in fams["apiserver_request"])


def test_values_are_formatted_as_prometheus_client_does() -> None:
    from prometheus_client.utils import floatToGoString

    from kybernetes.apiserver.metrics import _go

    for v in (0, 1, 5.0, 0.123, 999_999, 1_234_567, 12_345_678.5, 1e17, 3e-7, 100_000.25):
        assert _go(v) == floatToGoString(v)
