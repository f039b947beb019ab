"""GPU requests, device fitting and the FGD simulator's scores (PROTOCOL.md §3, §5)."""

from __future__ import annotations

import pytest

from kybernetes.api.gpushare import (
    GpuRequest,
    TypicalPod,
    bestfit_score,
    choose_devices,
    dotprod_score,
    fgd_score,
    fits,
    fragmentation,
    gpu_clustering_score,
    gpu_packing_score,
    gpu_request,
    typical_pods,
)


def _pod(resources: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"annotations": annotations or {}},
            "spec": {"containers": [{"name": "c", "resources": {"requests": resources or {}}}]}}


def test_requests_in_their_three_forms() -> None:
    assert gpu_request(_pod({"kybernetes.io/gpu-milli": "300"})) == GpuRequest(1, 300)
    assert gpu_request(_pod({"nvidia.com/gpu": "2"})) == GpuRequest(2, 1000)
    trace = _pod(annotations={"alibabacloud.com/gpu-milli": "460",
                              "alibabacloud.com/gpu-count": "1",
                              "alibabacloud.com/gpu-card-model": "V100M16|V100M32"})
    assert gpu_request(trace) == GpuRequest(1, 460, ("V100M16", "V100M32"))
    assert gpu_request(_pod({"cpu": "1"})) is None
    capped = _pod(annotations={"alibabacloud.com/gpu-milli": "1500"})
    assert gpu_request(capped) == GpuRequest(1, 1000)


def test_fitting_and_device_choice() -> None:
    share = GpuRequest(1, 300)
    assert fits([200, 300], "T4", share) and not fits([200, 250], "T4", share)
    assert not fits([1000], "T4", GpuRequest(1, 300, ("V100M16",)))
    assert fits([1000, 1000, 500], "A100", GpuRequest(2, 1000))
    assert not fits([1000, 999, 500], "A100", GpuRequest(2, 1000))
    assert choose_devices([700, 300, 300], share) == [1]  # least room, then lowest index
    assert choose_devices([700, 300, 300], share, prefer=[2, 0]) == [2]
    assert choose_devices([500, 1000, 1000, 1000], GpuRequest(2, 1000)) == [1, 2]
    assert choose_devices([500], GpuRequest(2, 1000)) is None


def test_typical_pods_cover_95_percent() -> None:
    pods = [(1000, 500, 1, "")] * 60 + [(2000, 1000, 1, "")] * 30 + \
        [(4000, 0, 0, "")] * 6 + [(8000, 1000, 8, "")] * 4
    typical = typical_pods(pods)
    assert [(t.milli, t.count) for t in typical] == [(500, 1), (1000, 1), (0, 0)]
    assert sum(t.weight for t in typical) == pytest.approx(1.0)
    assert typical[0].weight == pytest.approx(60 / 96)


def test_fragmentation_and_fgd_score() -> None:
    half = [TypicalPod(1000, 500, 1, (), 1.0)]
    # a device with 300 free cannot take a half-GPU pod: those 300 are fragments
    assert fragmentation(10_000, [1000, 300], "T4", half) == 300
    # no CPU left: every idle milli-GPU is a fragment
    assert fragmentation(0, [1000, 300], "T4", half) == 1300
    cpu_only = [TypicalPod(1000, 0, 0, (), 1.0)]
    assert fragmentation(10_000, [1000, 300], "T4", cpu_only) == 1300
    # a 200 share onto the 300-free device (leaving 100) reduces fragments by 200: the
    # best device; onto the full one it would create none and remove none
    score, device = fgd_score(10_000, [1000, 300], "T4", 1000, GpuRequest(1, 200), half)
    assert device == 1 and score == int(100 / (1 + 2.718281828459045 ** (-0.2)))
    score, device = fgd_score(10_000, [1000, 1000], "T4", 1000, GpuRequest(2, 1000), half)
    assert (score, device) == (50, -1)  # Δ = 0: the sigmoid's middle


def test_baseline_scores() -> None:
    assert dotprod_score(128_000, 8000, 128_000, 8000) == 0
    assert dotprod_score(64_000, 4000, 0, 0) == 100
    assert bestfit_score(1000, 1000, 1000, 1000) == 100
    assert bestfit_score(128_000, 8000, 0, 0) == 0
    share = GpuRequest(1, 200)
    assert gpu_packing_score([1000] * 8, share) == 25
    assert gpu_packing_score([1000, 300], GpuRequest(1, 500)) == 49  # takes a free one
    assert gpu_packing_score([500, 300], share) == max(100 - (50 + 30) // 10, 50)
    assert gpu_packing_score([1000], None) == 0
    assert gpu_clustering_score(8000, share, []) == 25
    assert gpu_clustering_score(4000, share, [GpuRequest(1, 500)]) == 75 + 12
    assert gpu_clustering_score(4000, share, [GpuRequest(1, 500), GpuRequest(2, 1000)]) == 62
    assert gpu_clustering_score(4000, share, [GpuRequest(2, 1000)]) == 12
    assert gpu_clustering_score(4000, None, [GpuRequest(2, 1000)]) == 0
