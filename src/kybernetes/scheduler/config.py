"""``KubeSchedulerConfiguration`` (``kubescheduler.config.k8s.io/v1``): profiles, the
plugins enabled at each extension point, score weights and plugin args, as upstream.

>>> cfg = parse({"profiles": [{"schedulerName": "bin-packing", "pluginConfig": [
...     {"name": "NodeResourcesFit", "args": {"scoringStrategy": {"type": "MostAllocated"}}}]}]})
>>> [p.scheduler_name for p in cfg.profiles]
['bin-packing']
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kybernetes.scheduler import framework as fw
from kybernetes.scheduler.framework import Handle, PluginFactory
from kybernetes.scheduler.runtime import Framework

API_VERSION = "kubescheduler.config.k8s.io/v1"
DEFAULT_SCHEDULER = "default-scheduler"

REGISTRY: dict[str, str] = {
    "PrioritySort": "prioritysort:new",
    "SchedulingGates": "schedulinggates:new",
    "NodeUnschedulable": "nodeunschedulable:new",
    "NodeName": "nodename:new",
    "TaintToleration": "tainttoleration:new",
    "NodeAffinity": "nodeaffinity:new",
    "NodePorts": "nodeports:new",
    "NodeResourcesFit": "noderesources:new_fit",
    "NodeResourcesBalancedAllocation": "noderesources:new_balanced",
    "VolumeRestrictions": "volumerestrictions:new",
    "VolumeBinding": "volumebinding:new",
    "PodTopologySpread": "podtopologyspread:new",
    "InterPodAffinity": "interpodaffinity:new",
    "DefaultPreemption": "defaultpreemption:new",
    "DefaultBinder": "defaultbinder:new",
    "Coscheduling": "coscheduling:new",
    "GpuShare": "gpushare:new",
    "RandomScore": "gpushare:new_random",
    "DotProductScore": "gpushare:new_dotprod",
    "GpuClusteringScore": "gpushare:new_clustering",
    "GpuPackingScore": "gpushare:new_packing",
    "BestFitScore": "gpushare:new_bestfit",
    "FGDScore": "gpushare:new_fgd",
    "FGDPlusScore": "gpushare:new_fgd_plus",
}
"""In-tree plugins: name -> ``module:factory`` under ``kybernetes.scheduler.plugins``."""

DEFAULT_PLUGINS: list[tuple[str, int]] = [
    ("SchedulingGates", 0), ("NodeUnschedulable", 0), ("NodeName", 0),
    ("TaintToleration", 3), ("NodeAffinity", 2), ("NodePorts", 0), ("NodeResourcesFit", 1),
    ("GpuShare", 0), ("VolumeRestrictions", 0), ("VolumeBinding", 0), ("PodTopologySpread", 2),
    ("InterPodAffinity", 2), ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1), ("DefaultBinder", 0), ("Coscheduling", 0),
]
"""upstream's default multiPoint set for v1, in order, with score weights — with gang
scheduling built in as scheduler-plugins' coscheduling profile sets it up: Coscheduling
enabled last (its PostFilter after preemption) and in PrioritySort's place as the queue
sort (which orders pods without a PodGroup exactly as PrioritySort does). A profile that
disables Coscheduling gets PrioritySort back."""

EXTENSION_POINTS: dict[str, type] = {
    "preEnqueue": fw.PreEnqueuePlugin, "queueSort": fw.QueueSortPlugin,
    "preFilter": fw.PreFilterPlugin, "filter": fw.FilterPlugin,
    "postFilter": fw.PostFilterPlugin, "preScore": fw.PreScorePlugin,
    "score": fw.ScorePlugin, "reserve": fw.ReservePlugin, "permit": fw.PermitPlugin,
    "preBind": fw.PreBindPlugin, "bind": fw.BindPlugin, "postBind": fw.PostBindPlugin,
}


class ConfigError(ValueError):
    pass


@dataclass
class Profile:
    scheduler_name: str = DEFAULT_SCHEDULER
    plugins: dict[str, Any] = field(default_factory=dict)
    plugin_config: dict[str, dict[str, Any]] = field(default_factory=dict)
    percentage_of_nodes_to_score: int | None = None


@dataclass
class SchedulerConfiguration:
    profiles: list[Profile] = field(default_factory=lambda: [Profile()])
    percentage_of_nodes_to_score: int = 0
    pod_initial_backoff_seconds: float = 1.0
    pod_max_backoff_seconds: float = 10.0


def load(path: str | Path) -> SchedulerConfiguration:
    """Read a configuration file (YAML or JSON)."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read scheduler configuration {path}: {e}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: not a KubeSchedulerConfiguration")
    return parse(doc)


def parse(doc: Mapping[str, Any]) -> SchedulerConfiguration:
    if doc.get("apiVersion", API_VERSION) != API_VERSION:
        raise ConfigError(f"apiVersion: Unsupported value: {doc.get('apiVersion')!r}: "
                          f"supported values: {API_VERSION!r}")
    if doc.get("kind", "KubeSchedulerConfiguration") != "KubeSchedulerConfiguration":
        raise ConfigError(f"kind: Unsupported value: {doc.get('kind')!r}")
    cfg = SchedulerConfiguration(
        percentage_of_nodes_to_score=int(doc.get("percentageOfNodesToScore") or 0),
        pod_initial_backoff_seconds=float(doc.get("podInitialBackoffSeconds") or 1),
        pod_max_backoff_seconds=float(doc.get("podMaxBackoffSeconds") or 10))
    if not 0 <= cfg.percentage_of_nodes_to_score <= 100:
        raise ConfigError("percentageOfNodesToScore: Invalid value: "
                          f"{cfg.percentage_of_nodes_to_score}: not in valid range [0-100]")
    if cfg.pod_max_backoff_seconds < cfg.pod_initial_backoff_seconds:
        raise ConfigError("podMaxBackoffSeconds: Invalid value: must be greater than or "
                          "equal to PodInitialBackoffSeconds")
    raw_profiles = doc.get("profiles") or [{}]
    profiles = []
    seen: set[str] = set()
    for i, p in enumerate(raw_profiles):
        name = p.get("schedulerName") or DEFAULT_SCHEDULER
        if name in seen:
            raise ConfigError(f"profiles[{i}].schedulerName: Duplicate value: {name!r}")
        seen.add(name)
        pc: dict[str, dict[str, Any]] = {}
        for j, entry in enumerate(p.get("pluginConfig") or ()):
            pname = entry.get("name", "")
            if pname in pc:
                raise ConfigError(f"profiles[{i}].pluginConfig[{j}]: Duplicate value: "
                                  f"{pname!r}")
            args = {k: v for k, v in (entry.get("args") or {}).items()
                    if k not in ("apiVersion", "kind")}
            pc[pname] = args
        pct = p.get("percentageOfNodesToScore")
        profiles.append(Profile(name, dict(p.get("plugins") or {}), pc,
                                int(pct) if pct is not None else None))
    cfg.profiles = profiles
    return cfg


def _names(entries: Any) -> list[tuple[str, int]]:
    return [(str(e.get("name", "")), int(e.get("weight") or 0)) for e in entries or ()]


def _plugin_sets(profile: Profile) -> tuple[list[tuple[str, int]], dict[str, list[str]],
                                             dict[str, set[str]]]:
    """(multiPoint plugins with weights, explicit plugins per point, disabled per point)."""
    plugins = profile.plugins
    mp = plugins.get("multiPoint") or {}
    mp_disabled = {n for n, _ in _names(mp.get("disabled"))}
    multi: list[tuple[str, int]] = []
    if "*" not in mp_disabled:
        multi = [(n, w) for n, w in DEFAULT_PLUGINS if n not in mp_disabled]
    for name, weight in _names(mp.get("enabled")):
        multi = [(n, w) for n, w in multi if n != name] + [(name, weight)]
    explicit: dict[str, list[str]] = {}
    disabled: dict[str, set[str]] = {}
    for point in EXTENSION_POINTS:
        cfg = plugins.get(point) or {}
        explicit[point] = [n for n, _ in _names(cfg.get("enabled"))]
        disabled[point] = {n for n, _ in _names(cfg.get("disabled"))}
    return multi, explicit, disabled


def import_plugins() -> None:
    """Import every in-tree plugin (done on a thread at start, so that building the
    profiles later does not stall the event loop)."""
    for target in REGISTRY.values():
        importlib.import_module(f"kybernetes.scheduler.plugins.{target.split(':')[0]}")


def _make(name: str, args: dict[str, Any], handle: Handle) -> Any:
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"plugin {name!r} not found")
    module, factory = target.split(":")
    fn: PluginFactory = getattr(importlib.import_module(
        f"kybernetes.scheduler.plugins.{module}"), factory)
    try:
        return fn(dict(args), handle)
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"initializing plugin {name!r}: {e}") from None


def build(cfg: SchedulerConfiguration, handle: Handle) -> dict[str, Framework]:
    """One :class:`Framework` per profile, keyed by scheduler name."""
    out: dict[str, Framework] = {}
    for profile in cfg.profiles:
        multi, explicit, disabled = _plugin_sets(profile)
        weights: dict[str, int] = {n: w for n, w in multi if w}
        score_cfg = profile.plugins.get("score") or {}
        for n, w in _names(score_cfg.get("enabled")):
            if w:
                weights[n] = w
        instances: dict[str, Any] = {}

        def instance(name: str, profile: Profile = profile,
                     instances: dict[str, Any] = instances) -> Any:
            if name not in instances:
                instances[name] = _make(name, profile.plugin_config.get(name, {}), handle)
            return instances[name]

        points: dict[str, list[Any]] = {}
        for point, proto in EXTENSION_POINTS.items():
            off = disabled[point]
            names = [] if "*" in off else [n for n, _ in multi if n not in off]
            chosen: list[Any] = []
            for n in names:
                pl = instance(n)
                if isinstance(pl, proto):
                    chosen.append(pl)
            if point == "queueSort" and explicit[point]:
                chosen = []  # a queue sort named explicitly replaces the default one
            for n in explicit[point]:
                pl = instance(n)
                if not isinstance(pl, proto):
                    raise ConfigError(f"plugin {n!r} does not extend {point}")
                chosen = [c for c in chosen if c.name != n] + [pl]
            if point == "queueSort" and not chosen and multi and not off & {
                    "*", "PrioritySort"}:
                chosen = [instance("PrioritySort")]  # Coscheduling disabled: the default
            points[point] = chosen
        if len(points["queueSort"]) != 1:
            raise ConfigError(f"profiles {profile.scheduler_name!r}: exactly one queueSort "
                              f"plugin is needed, {len(points['queueSort'])} enabled")
        if not points["bind"]:
            raise ConfigError(f"profiles {profile.scheduler_name!r}: at least one bind plugin "
                              "is needed")
        for name in profile.plugin_config:
            if name not in REGISTRY:
                raise ConfigError(f"pluginConfig: plugin {name!r} not found")
        pct = profile.percentage_of_nodes_to_score
        out[profile.scheduler_name] = Framework(
            profile.scheduler_name, points, {n: (w or 1) for n, w in weights.items()}, handle,
            percentage_of_nodes_to_score=cfg.percentage_of_nodes_to_score if pct is None
            else pct)
    sorts = {type(f.queue_sort) for f in out.values()}
    if len(sorts) > 1:
        raise ConfigError("queueSort must be the same for all profiles")
    return out
