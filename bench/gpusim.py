"""GPU placement on the Alibaba trace (issue 8): ``kyb sim gpu``'s replay for every policy
and seed, compared with the FGD paper's published means
(``../shared/data/fgd-reference/analysis_allo_discrete.csv``).

    python -m bench.gpusim [--workloads default] [--policies Random,...,FGD]
                           [--seeds 42-51] [--jobs 2] [--out results/gpusim.json]

Prints JSON: per workload and policy, our mean allocation at arrived 100 % and 130 % over
the seeds, the published mean, the difference, and the slowest replay's seconds.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from bench.run import machine, report
from kybernetes.scheduler import gpusim

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
TRACE = SHARED / "alibaba-gpu-v2023"
REFERENCE = SHARED / "fgd-reference" / "analysis_allo_discrete.csv"
WORKLOADS = ["default", "cpu050", "cpu100", "cpu200", "cpu250", "gpushare40", "gpushare60",
             "gpushare80", "gpushare100", "gpuspec10", "gpuspec20", "gpuspec25", "gpuspec33",
             "multigpu20", "multigpu30", "multigpu40", "multigpu50"]
REFERENCE_POLICIES = {"01-Random": "Random", "02-DotProd": "DotProd",
                      "03-GpuClustering": "GpuClustering", "04-GpuPacking": "GpuPacking",
                      "05-BestFit": "BestFit", "06-FGD": "FGD"}


def published() -> dict[tuple[str, str], dict[str, float]]:
    """(workload, policy) → {column: mean over the published seeds}."""
    values: dict[tuple[str, str], dict[str, list[float]]] = {}
    with open(REFERENCE, newline="") as f:
        for row in csv.DictReader(f):
            policy = REFERENCE_POLICIES.get(row.get("sc_policy", ""))
            workload = row.get("workload", "").removeprefix("openb_pod_list_")
            if policy is None or float(row.get("tune", 0) or 0) != 1.3:
                continue
            cols = values.setdefault((workload, policy), {})
            for col in ("100", "130"):
                if row.get(col):
                    cols.setdefault(col, []).append(float(row[col]))
    return {k: {c: statistics.mean(v) for c, v in cols.items()} for k, cols in values.items()}


def _one(job: tuple[str, str, int]) -> dict[str, Any]:
    workload, policy, seed = job
    nodes = gpusim.load_nodes(TRACE / "openb_node_list_gpu_node.csv")
    pods = gpusim.load_pods(TRACE / f"openb_pod_list_{workload}.csv")
    r = gpusim.replay(nodes, pods, policy, tune=1.3, seed=seed)
    return {"workload": workload, "policy": policy, "seed": seed, "seconds": r.seconds,
            "100": r.curve.get(100), "130": r.curve.get(130), "failed": r.failed}


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = text.split("-")
        return list(range(int(lo), int(hi) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workloads", default="default")
    ap.add_argument("--policies", default=",".join(gpusim.POLICIES))
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    workloads = WORKLOADS if args.workloads == "all" else args.workloads.split(",")
    policies = args.policies.split(",")
    jobs = [(w, p, s) for w in workloads for p in policies for s in _seeds(args.seeds)]
    started = time.monotonic()
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(_one, jobs))
    ref = published()
    rows = []
    for w in workloads:
        for p in policies:
            mine = [r for r in runs if r["workload"] == w and r["policy"] == p]
            row: dict[str, Any] = {"workload": w, "policy": p, "seeds": len(mine),
                                   "max_seconds": round(max(r["seconds"] for r in mine), 1)}
            for col in ("100", "130"):
                ours = [r[col] for r in mine if r[col] is not None]
                row[f"ours_{col}"] = round(statistics.mean(ours), 2) if ours else None
                row[f"sd_{col}"] = round(statistics.stdev(ours), 2) if len(ours) > 1 else None
                theirs = ref.get((w, p), {}).get(col)
                row[f"published_{col}"] = round(theirs, 2) if theirs is not None else None
                if ours and theirs is not None:
                    row[f"diff_{col}"] = round(statistics.mean(ours) - theirs, 2)
            rows.append(row)
    report({"bench": "gpusim", "date": time.strftime("%Y-%m-%d"), "machine": machine(),
            "tune": 1.3, "seeds": args.seeds, "wall_seconds": round(time.monotonic() - started),
            "results": rows}, args.out)


if __name__ == "__main__":
    main()
