"""Which volume a claim binds to, and the default StorageClass."""

from __future__ import annotations

from typing import Any

from kybernetes.api import storage


def pv(name: str, size: str, *, cls: str = "fast", modes: tuple[str, ...] = ("ReadWriteOnce",),
       labels: dict[str, str] | None = None, ref: dict[str, Any] | None = None,
       phase: str = "Available") -> dict[str, Any]:
    spec: dict[str, Any] = {"capacity": {"storage": size}, "accessModes": list(modes),
                            "storageClassName": cls}
    if ref is not None:
        spec["claimRef"] = ref
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": spec,
            "status": {"phase": phase}}


def pvc(size: str = "1Gi", *, cls: str | None = "fast", modes: tuple[str, ...] = ("ReadWriteOnce",),
        selector: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes),
                            "resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    if selector is not None:
        spec["selector"] = selector
    return {"metadata": {"name": "c", "namespace": "ns", "uid": "u1"}, "spec": spec}


def test_smallest_fitting_volume_of_the_class() -> None:
    vols = [pv("big", "10Gi"), pv("small", "2Gi"), pv("tiny", "500Mi"),
            pv("other-class", "1Gi", cls="slow"), pv("rwx-only", "1Gi", modes=("ReadWriteMany",))]
    assert storage.best_match(vols, pvc())["metadata"]["name"] == "small"  # type: ignore[index]
    assert storage.best_match(vols, pvc("20Gi")) is None
    assert storage.best_match(vols, pvc(modes=("ReadWriteMany",)))["metadata"][  # type: ignore[index]
        "name"] == "rwx-only"


def test_bound_and_selected_volumes() -> None:
    taken = pv("taken", "1Gi", ref={"namespace": "ns", "name": "someone", "uid": "x"},
               phase="Bound")
    assert storage.best_match([taken], pvc()) is None
    pre = pv("pre", "5Gi", ref={"namespace": "ns", "name": "c"})
    # a volume pre-bound to the claim's name wins over a smaller free one
    assert storage.best_match([pv("free", "1Gi"), pre], pvc())["metadata"]["name"] == "pre"  # type: ignore[index]
    labelled = [pv("a", "1Gi", labels={"disk": "ssd"}), pv("b", "1Gi", labels={"disk": "hdd"})]
    sel = {"matchLabels": {"disk": "hdd"}}
    assert storage.best_match(labelled, pvc(selector=sel))["metadata"]["name"] == "b"  # type: ignore[index]
    # no class on either side matches only class-less volumes
    assert storage.best_match([pv("x", "1Gi")], pvc(cls="")) is None
    assert storage.best_match([pv("x", "1Gi", cls="")], pvc(cls=""))["metadata"]["name"] == "x"  # type: ignore[index]


def test_refers_to_needs_the_same_uid_once_set() -> None:
    claim = pvc()
    assert storage.refers_to({"namespace": "ns", "name": "c"}, claim)
    assert storage.refers_to({"namespace": "ns", "name": "c", "uid": "u1"}, claim)
    assert not storage.refers_to({"namespace": "ns", "name": "c", "uid": "old"}, claim)
    assert not storage.refers_to({"namespace": "other", "name": "c"}, claim)


def test_default_class_is_the_newest_marked() -> None:
    def sc(name: str, stamp: str, default: bool) -> dict[str, Any]:
        ann = {storage.ANN_DEFAULT_CLASS: "true"} if default else {}
        return {"metadata": {"name": name, "creationTimestamp": stamp, "annotations": ann}}

    assert storage.default_class([sc("a", "2026-01-01T00:00:00Z", False)]) is None
    classes = [sc("old", "2026-01-01T00:00:00Z", True), sc("new", "2026-02-01T00:00:00Z", True),
               sc("plain", "2026-03-01T00:00:00Z", False)]
    assert storage.default_class(classes)["metadata"]["name"] == "new"  # type: ignore[index]


def test_node_affinity() -> None:
    vol = pv("v", "1Gi")
    assert storage.node_allowed(vol, "n1")
    vol["spec"]["nodeAffinity"] = {"required": {"nodeSelectorTerms": [{"matchExpressions": [
        {"key": storage.HOSTNAME_LABEL, "operator": "In", "values": ["n1"]}]}]}}
    assert storage.node_allowed(vol, "n1") and not storage.node_allowed(vol, "n2")
    assert storage.claims_of({"spec": {"volumes": [
        {"name": "a", "persistentVolumeClaim": {"claimName": "x"}}, {"name": "b", "emptyDir": {}}]}}
    ) == ["x"]
