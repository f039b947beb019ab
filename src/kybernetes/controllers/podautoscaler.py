"""The HorizontalPodAutoscaler controller (``autoscaling/v2``; v1 objects are the same
stored objects, converted by the API server).

Every ``sync_period`` (15 s) each autoscaler is reconciled as upstream's
``reconcileAutoscaler`` does: read the target's ``scale`` subresource; outside
[minReplicas, maxReplicas] move inside at once; otherwise ask each metric for a replica
count (:mod:`podautoscaler_calc`), take the largest, normalize it
(:mod:`podautoscaler_behavior`), write the scale, and record status — current and desired
replicas, current metrics, lastScaleTime and the AbleToScale / ScalingActive /
ScalingLimited conditions — with upstream's events (SuccessfulRescale,
FailedGetResourceMetric, FailedComputeMetricsReplicas, ...).

Metrics come from the aggregated metric APIs through the API server: ``metrics.k8s.io``
(Resource, ContainerResource), ``custom.metrics.k8s.io`` (Pods, Object) and
``external.metrics.k8s.io`` (External). If some metrics fail, the others still scale up,
never down.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from dataclasses import dataclass
from fractions import Fraction
from typing import Any
from urllib.parse import quote

from kybernetes.aio.clock import SYSTEM_CLOCK, Clock
from kybernetes.aio.tasks import cancel_and_wait, spawn
from kybernetes.api import quantity
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import object_key, parse_time, rfc3339
from kybernetes.api.selectors import (
    LabelSelector,
    SelectorError,
    parse_label_selector,
    selector_string,
)
from kybernetes.client import (
    NAMESPACE_INDEX,
    Client,
    Informer,
    Result,
    WorkQueue,
    namespace_index,
    run_workers,
    shared_informer,
)
from kybernetes.client.discovery import discover
from kybernetes.client.events import EventRecorder
from kybernetes.controllers.podautoscaler_behavior import Condition, Normalizer
from kybernetes.controllers.podautoscaler_calc import (
    CPU_INITIALIZATION_PERIOD,
    INITIAL_READINESS_DELAY,
    TOLERANCE,
    Calculator,
    MetricError,
    PodMetric,
    PodMetrics,
)
from kybernetes.controllers.replicaset import ensure_index

log = logging.getLogger(__name__)
Obj = dict[str, Any]

SYNC_PERIOD = 15.0
"""--horizontal-pod-autoscaler-sync-period."""
API = "autoscaling/v2"
PLURAL = "horizontalpodautoscalers"
RESOURCE_METRICS = "/apis/metrics.k8s.io/v1beta1"
CUSTOM_METRICS = "/apis/custom.metrics.k8s.io/v1beta2"
EXTERNAL_METRICS = "/apis/external.metrics.k8s.io/v1beta1"


def milli_quantity(milli: int) -> str:
    """``resource.NewMilliQuantity(v, DecimalSI)`` as text."""
    return quantity.format_quantity(Fraction(milli, 1000))


def _go_selector(sel: Obj | None) -> str:
    """How Go's ``%+v`` prints a label selector in upstream's metric names."""
    if not sel:
        return "nil"
    labels = ",".join(f"{k}: {v}" for k, v in sorted((sel.get("matchLabels") or {}).items()))
    return f"&LabelSelector{{MatchLabels:map[string]string{{{labels},}},MatchExpressions:[]" \
           "LabelSelectorRequirement{},}"


@dataclass
class _Outcome:
    replicas: int
    name: str
    status: Obj


class _Failed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MetricsClient:
    """Reads the aggregated metric APIs the way upstream's REST metrics client does."""

    def __init__(self, client: Client) -> None:
        self.client = client

    async def resource(self, resource: str, namespace: str, selector: LabelSelector,
                       container: str) -> PodMetrics:
        try:
            doc = await self.client.request(
                "GET", f"{RESOURCE_METRICS}/namespaces/{namespace}/pods",
                params={"labelSelector": str(selector) or None})
        except (StatusError, OSError) as e:
            raise MetricError(f"unable to fetch metrics from resource metrics API: "
                              f"{_reason(e)}") from None
        items = doc.get("items") or []
        if not items:
            raise MetricError("no metrics returned from resource metrics API")
        out: PodMetrics = {}
        for m in items:
            name = (m.get("metadata") or {}).get("name", "")
            stamp = parse_time(m.get("timestamp")) or 0.0
            window = _seconds(m.get("window"))
            containers = m.get("containers") or []
            if container:
                found = next((c for c in containers if c.get("name") == container), None)
                if found is None:
                    continue
                usage = (found.get("usage") or {}).get(resource)
                if usage is None:
                    raise MetricError(
                        f"failed to get container metrics: missing resource metric {resource} "
                        f"for container {container} in pod {namespace}/{name}")
                out[name] = PodMetric(quantity.milli_value(usage), stamp, window)
                continue
            total = 0
            missing = not containers
            for c in containers:
                usage = (c.get("usage") or {}).get(resource)
                if usage is None:
                    missing = True
                    break
                total += quantity.milli_value(usage)
            if not missing:
                out[name] = PodMetric(total, stamp, window)
        return out

    async def pods(self, metric: str, namespace: str, selector: LabelSelector,
                   metric_selector: str) -> PodMetrics:
        doc = await self._get(
            f"{CUSTOM_METRICS}/namespaces/{namespace}/pods/*/{quote(metric, safe='')}",
            {"labelSelector": str(selector) or None, "metricLabelSelector": metric_selector or None},
            "custom")
        items = doc.get("items") or []
        if not items:
            raise MetricError("no metrics returned from custom metrics API")
        out: PodMetrics = {}
        for m in items:
            name = (m.get("describedObject") or {}).get("name", "")
            out[name] = PodMetric(quantity.milli_value(m.get("value") or 0),
                                  parse_time(m.get("timestamp")) or 0.0,
                                  float(m.get("windowSeconds") or 0))
        return out

    async def object(self, metric: str, namespace: str, plural: str, name: str,
                     metric_selector: str) -> int:
        doc = await self._get(
            f"{CUSTOM_METRICS}/namespaces/{namespace}/{plural}/{name}/{quote(metric, safe='')}",
            {"metricLabelSelector": metric_selector or None}, "custom")
        items = doc.get("items") or []
        if not items:
            raise MetricError("no metrics returned from custom metrics API")
        return quantity.milli_value(items[0].get("value") or 0)

    async def external(self, metric: str, namespace: str, selector: str) -> list[int]:
        doc = await self._get(
            f"{EXTERNAL_METRICS}/namespaces/{namespace}/{quote(metric.lower(), safe='')}",
            {"labelSelector": selector or None}, "external")
        return [quantity.milli_value(m.get("value") or 0) for m in doc.get("items") or []]

    async def _get(self, path: str, params: dict[str, str | None], api: str) -> Obj:
        try:
            doc: Obj = await self.client.request("GET", path, params=params)
            return doc
        except (StatusError, OSError) as e:
            raise MetricError(f"unable to fetch metrics from {api} metrics API: "
                              f"{_reason(e)}") from None


def _reason(e: Exception) -> str:
    if isinstance(e, StatusError):
        return e.message or str(e)
    return str(e) or type(e).__name__


def _seconds(text: Any) -> float:
    """A Go duration as metrics-server writes it (``"15.2s"``, ``"1m0s"``)."""
    if not text:
        return 0.0
    s = str(text)
    total, num = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(s):
        ch = s[i]
        if ch.isdigit() or ch == ".":
            num += ch
            i += 1
            continue
        unit = "ms" if s.startswith("ms", i) else ch
        total += float(num or 0) * units.get(unit, 0.0)
        num = ""
        i += len(unit)
    return total


class PodAutoscalerController:
    def __init__(self, client: Client, *, pods: Informer | None = None, workers: int = 1,
                 clock: Clock = SYSTEM_CLOCK, sync_period: float = SYNC_PERIOD,
                 downscale_stabilization: float = 300.0, tolerance: float = TOLERANCE,
                 cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
                 initial_readiness_delay: float = INITIAL_READINESS_DELAY) -> None:
        self.client = client
        self.clock = clock
        self.workers = workers
        self.sync_period = sync_period
        self.hpas = Informer(client, API, PLURAL)
        self.pods = pods or shared_informer(client, "v1", "pods")
        self._own_pods = pods is None
        self.queue: WorkQueue[str] = WorkQueue(clock=clock, name="horizontal-pod-autoscaler")
        self.calc = Calculator(tolerance=tolerance,
                               cpu_initialization_period=cpu_initialization_period,
                               initial_readiness_delay=initial_readiness_delay)
        self.normalizer = Normalizer(downscale_stabilization=downscale_stabilization)
        self.metrics = MetricsClient(client)
        self.events = EventRecorder(client, "horizontal-pod-autoscaler")
        self._plurals: dict[tuple[str, str], tuple[str, str]] = {}
        """(group, kind) -> (apiVersion, plural) of the served resource."""
        self._tasks: list[asyncio.Task[Any]] = []

    # -- wiring ---------------------------------------------------------------------------

    async def start(self) -> None:
        ensure_index(self.pods, NAMESPACE_INDEX, namespace_index)
        self.hpas.add_handler(on_add=self._enqueue,
                              on_update=lambda old, new: self._updated(old, new),
                              on_delete=self._deleted)
        self.hpas.start()
        if self._own_pods:
            self.pods.start()
        self._tasks.append(spawn(self._run(), name="hpa-workers"))

    def _enqueue(self, hpa: Obj) -> None:
        self.queue.add(object_key(hpa))

    def _updated(self, old: Obj, new: Obj) -> None:
        # our own status writes come back as updates: only spec changes need a sync now
        if old.get("spec") != new.get("spec"):
            self._enqueue(new)

    def _deleted(self, hpa: Obj) -> None:
        self.normalizer.forget(object_key(hpa))

    async def _run(self) -> None:
        await self.hpas.wait_synced()
        await self.pods.wait_synced()
        await run_workers(self.queue, self.reconcile, workers=self.workers,
                          name="horizontal-pod-autoscaler")

    async def stop(self) -> None:
        await cancel_and_wait(*self._tasks)
        await self.hpas.stop()
        if self._own_pods:
            await self.pods.stop()
        with contextlib.suppress(Exception):
            await self.queue.aclose()

    # -- reconcile ------------------------------------------------------------------------

    async def reconcile(self, key: str) -> Result | None:
        shared = self.hpas.get(key)
        if shared is None:
            self.normalizer.forget(key)
            return None
        hpa = copy.deepcopy(shared)
        hpa.setdefault("apiVersion", API)
        hpa.setdefault("kind", "HorizontalPodAutoscaler")
        try:
            await self._reconcile(key, hpa)
        except StatusError as e:
            if e.code == 404:
                return None
            log.warning("horizontal-pod-autoscaler %s: %s", key, e.message)
        return Result(requeue_after=self.sync_period)

    async def _reconcile(self, key: str, hpa: Obj) -> None:
        original = copy.deepcopy(hpa.get("status") or {})
        spec = hpa.get("spec") or {}
        status = hpa.setdefault("status", {})
        ns = hpa["metadata"].get("namespace", "")
        ref = spec.get("scaleTargetRef") or {}
        reference = f"{ref.get('kind', '')}/{ns}/{ref.get('name', '')}"
        now = self.clock.now()
        try:
            api_version, plural = await self._resource_of(ref)
            scale = await self.client.get(api_version, plural, ref.get("name", ""),
                                          namespace=ns, subresource="scale")
        except (StatusError, LookupError) as e:
            msg = e.message if isinstance(e, StatusError) else str(e)
            await self.events.emit(hpa, "Warning", "FailedGetScale", msg)
            self._set_condition(hpa, ("AbleToScale", "False", "FailedGetScale",
                                      f"the HPA controller was unable to get the target's "
                                      f"current scale: {msg}"), now)
            await self._write_status(hpa, original)
            log.info("failed to query scale subresource for %s: %s", reference, msg)
            return
        self._set_condition(hpa, ("AbleToScale", "True", "SucceededGetScale",
                                  "the HPA controller was able to get the target's current "
                                  "scale"), now)
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        self.normalizer.record_initial(key, current, now)
        given_min = spec.get("minReplicas")
        min_replicas = 1 if given_min is None else int(given_min)
        max_replicas = int(spec.get("maxReplicas") or 0)
        statuses: list[Obj] = []
        rescale, desired, reason = True, 0, ""
        if current == 0 and min_replicas != 0:
            rescale = False
            self._set_condition(hpa, ("ScalingActive", "False", "ScalingDisabled",
                                      "scaling is disabled since the replica count of the "
                                      "target is zero"), now)
        elif current > max_replicas:
            reason, desired = "Current number of replicas above Spec.MaxReplicas", max_replicas
        elif current < min_replicas:
            reason, desired = "Current number of replicas below Spec.MinReplicas", min_replicas
        else:
            proposal, metric_name, statuses, error = await self._compute_for_metrics(
                hpa, scale, spec.get("metrics") or [], now)
            if proposal < 0:
                self._set_status(hpa, current, int(status.get("desiredReplicas") or 0),
                                 statuses, rescale=False, now=now)
                await self._write_status(hpa, original)
                await self.events.emit(hpa, "Warning", "FailedComputeMetricsReplicas", error)
                log.info("failed to compute desired number of replicas based on listed "
                         "metrics for %s: %s", reference, error)
                return
            if proposal > desired:
                desired = proposal
            if desired > current:
                reason = f"{metric_name} above target"
            if desired < current:
                reason = "All metrics below target"
            behavior = spec.get("behavior")
            if behavior is None:
                desired, conds = self.normalizer.normalize(key, current, desired, min_replicas,
                                                           max_replicas, now)
            else:
                desired, conds = self.normalizer.normalize_with_behavior(
                    key, behavior, current, desired, min_replicas, max_replicas, now)
            for cond in conds:
                self._set_condition(hpa, cond, now)
            rescale = desired != current
        if rescale:
            scale["spec"]["replicas"] = desired
            try:
                await self.client.update(api_version, plural, scale, namespace=ns,
                                         subresource="scale")
            except StatusError as e:
                await self.events.emit(hpa, "Warning", "FailedRescale",
                                       f"New size: {desired}; reason: {reason}; error: "
                                       f"{e.message}")
                self._set_condition(hpa, ("AbleToScale", "False", "FailedUpdateScale",
                                          f"the HPA controller was unable to update the "
                                          f"target scale: {e.message}"), now)
                self._set_status(hpa, current, int(status.get("desiredReplicas") or 0),
                                 statuses, rescale=False, now=now)
                await self._write_status(hpa, original)
                return
            self._set_condition(hpa, ("AbleToScale", "True", "SucceededRescale",
                                      f"the HPA controller was able to update the target "
                                      f"scale to {desired}"), now)
            await self.events.emit(hpa, "Normal", "SuccessfulRescale",
                                   f"New size: {desired}; reason: {reason}")
            self.normalizer.store_scale_event(key, spec.get("behavior"), current, desired, now)
            log.info("%s: rescaled %s from %d to %d (%s)", key, reference, current, desired,
                     reason)
        else:
            desired = current
        self._set_status(hpa, current, desired, statuses, rescale=rescale, now=now)
        await self._write_status(hpa, original)

    async def _compute_for_metrics(self, hpa: Obj, scale: Obj, specs: list[Obj],
                                   now: float) -> tuple[int, str, list[Obj], str]:
        """(replicas or -1, the metric that asked for them, statuses, first error)."""
        sel_text = (scale.get("status") or {}).get("selector") or ""
        if not sel_text:
            await self.events.emit(hpa, "Warning", "SelectorRequired", "selector is required")
            self._set_condition(hpa, ("ScalingActive", "False", "InvalidSelector",
                                      "the HPA target's scale is missing a selector"), now)
            return -1, "", [], "selector is required"
        try:
            selector = parse_label_selector(sel_text)
        except SelectorError as e:
            msg = f"couldn't convert selector into a corresponding internal selector object: {e}"
            await self.events.emit(hpa, "Warning", "InvalidSelector", msg)
            self._set_condition(hpa, ("ScalingActive", "False", "InvalidSelector", msg), now)
            return -1, "", [], msg
        spec_replicas = int((scale.get("spec") or {}).get("replicas") or 0)
        status_replicas = int((scale.get("status") or {}).get("replicas") or 0)
        ns = hpa["metadata"].get("namespace", "")
        pods = [p for p in self._namespace_pods(ns)
                if selector.matches((p.get("metadata") or {}).get("labels"))]
        statuses: list[Obj] = []
        replicas, chosen = 0, ""
        invalid, first_error = 0, ""
        first_condition: Condition | None = None
        for spec in specs:
            try:
                out = await self._compute_for_metric(hpa, spec, spec_replicas, status_replicas,
                                                     selector, pods, now)
            except _Failed as e:
                await self.events.emit(hpa, "Warning", e.reason, str(e))
                if invalid == 0:
                    first_condition = ("ScalingActive", "False", e.reason,
                                       f"the HPA was unable to compute the replica count: {e}")
                    first_error = str(e)
                invalid += 1
                statuses.append({"type": ""})
                continue
            statuses.append(out.status)
            if replicas == 0 or out.replicas > replicas:
                replicas, chosen = out.replicas, out.name
        error = ""
        if invalid:
            error = (f"invalid metrics ({invalid} invalid out of {len(specs)}), first error "
                     f"is: {first_error}")
        if invalid >= len(specs) or (invalid and replicas < spec_replicas):
            if first_condition is not None:
                self._set_condition(hpa, first_condition, now)
            return -1, "", statuses, error
        self._set_condition(hpa, ("ScalingActive", "True", "ValidMetricFound",
                                  f"the HPA was able to successfully calculate a replica count "
                                  f"from {chosen}"), now)
        return replicas, chosen, statuses, error

    def _namespace_pods(self, ns: str) -> list[Obj]:
        return self.pods.by_index(NAMESPACE_INDEX, ns)

    async def _compute_for_metric(self, hpa: Obj, spec: Obj, spec_replicas: int,
                                  status_replicas: int, selector: LabelSelector,
                                  pods: list[Obj], now: float) -> _Outcome:
        typ = spec.get("type")
        ns = hpa["metadata"].get("namespace", "")
        if typ in ("Resource", "ContainerResource"):
            key = "resource" if typ == "Resource" else "containerResource"
            src = spec.get(key) or {}
            reason = "FailedGetResourceMetric" if typ == "Resource" else \
                "FailedGetContainerResourceMetric"
            current, name = await self._resource_metric(
                typ, src, spec_replicas, ns, selector, pods, now, reason)
            status = {"name": src.get("name", ""), "current": current[1]}
            if typ == "ContainerResource":
                status["container"] = src.get("container", "")
            return _Outcome(current[0], name, {"type": typ, key: status})
        if typ == "Pods":
            src = spec.get("pods") or {}
            metric = src.get("metric") or {}
            target = src.get("target") or {}
            try:
                if target.get("averageValue") is None:
                    raise MetricError("invalid pods metric source: average value target was "
                                      "not set")
                values = await self.metrics.pods(
                    metric.get("name", ""), ns, selector,
                    selector_string(metric.get("selector")) if metric.get("selector") else "")
                replicas, usage = self.calc.plain_replicas(
                    spec_replicas, quantity.milli_value(target["averageValue"]), "", pods,
                    values, now)
            except MetricError as e:
                raise _Failed("FailedGetPodsMetric",
                              f"failed to get pods metric value: {e}") from None
            return _Outcome(replicas, f"pods metric {metric.get('name', '')}", {
                "type": "Pods", "pods": {"metric": metric, "current": {
                    "averageValue": milli_quantity(usage)}}})
        if typ == "Object":
            return await self._object_metric(spec.get("object") or {}, spec_replicas,
                                             status_replicas, ns, pods)
        if typ == "External":
            return await self._external_metric(spec.get("external") or {}, spec_replicas,
                                               status_replicas, ns, pods)
        raise _Failed("InvalidMetricSourceType", f"unknown metric source type {typ!r}")

    async def _resource_metric(self, typ: str, src: Obj, spec_replicas: int, ns: str,
                               selector: LabelSelector, pods: list[Obj], now: float,
                               reason: str) -> tuple[tuple[int, Obj], str]:
        name = src.get("name", "")
        container = src.get("container", "") if typ == "ContainerResource" else ""
        target = src.get("target") or {}
        if target.get("averageValue") is not None:
            try:
                values = await self.metrics.resource(name, ns, selector, container)
                replicas, usage = self.calc.raw_resource_replicas(
                    spec_replicas, quantity.milli_value(target["averageValue"]), name, pods,
                    values, now)
            except MetricError as e:
                raise _Failed(reason, f"failed to get {name} usage: unable to get metrics "
                              f"for resource {name}: {e}") from None
            return (replicas, {"averageValue": milli_quantity(usage)}), f"{name} resource"
        if target.get("averageUtilization") is None:
            raise _Failed(reason, "invalid resource metric source: neither an average "
                          "utilization target nor an average value (usage) target was set")
        try:
            values = await self.metrics.resource(name, ns, selector, container)
        except MetricError as e:
            raise _Failed(reason, f"failed to get {name} utilization: unable to get metrics "
                          f"for resource {name}: {e}") from None
        try:
            replicas, util, raw = self.calc.resource_replicas(
                spec_replicas, int(target["averageUtilization"]), name, pods, values, now,
                container)
        except MetricError as e:
            raise _Failed(reason, f"failed to get {name} utilization: {e}") from None
        label = f"{name} container resource" if typ == "ContainerResource" else \
            f"{name} resource"
        return ((replicas, {"averageUtilization": util, "averageValue": milli_quantity(raw)}),
                f"{label} utilization (percentage of request)")

    async def _object_metric(self, src: Obj, spec_replicas: int, status_replicas: int,
                             ns: str, pods: list[Obj]) -> _Outcome:
        metric = src.get("metric") or {}
        described = src.get("describedObject") or {}
        target = src.get("target") or {}
        kind, obj_name = described.get("kind", ""), described.get("name", "")
        msel = selector_string(metric.get("selector")) if metric.get("selector") else ""
        try:
            _, plural = await self._resource_of(described)
            usage = await self.metrics.object(metric.get("name", ""), ns, plural, obj_name, msel)
            if target.get("type") == "Value" and target.get("value") is not None:
                t = quantity.milli_value(target["value"])
                replicas = self.calc.usage_ratio_replicas(spec_replicas, usage / t, pods)
                current = {"value": milli_quantity(usage)}
            elif target.get("averageValue") is not None:
                replicas, per_pod = self.calc.per_pod_replicas(
                    status_replicas, usage, quantity.milli_value(target["averageValue"]))
                current = {"averageValue": milli_quantity(per_pod)}
            else:
                raise MetricError("invalid object metric source: neither a value target nor "
                                  "an average value target was set")
        except (MetricError, LookupError) as e:
            raise _Failed("FailedGetObjectMetric",
                          f"failed to get object metric value: unable to get metric "
                          f"{metric.get('name', '')}: {kind} on {ns} {obj_name}/{e}") from None
        return _Outcome(replicas, f"{kind} metric {metric.get('name', '')}", {
            "type": "Object", "object": {"describedObject": described, "metric": metric,
                                         "current": current}})

    async def _external_metric(self, src: Obj, spec_replicas: int, status_replicas: int,
                               ns: str, pods: list[Obj]) -> _Outcome:
        metric = src.get("metric") or {}
        name = metric.get("name", "")
        target = src.get("target") or {}
        msel = selector_string(metric.get("selector")) if metric.get("selector") else ""
        label = f"external metric {name}({_go_selector(metric.get('selector'))})"
        try:
            if target.get("averageValue") is not None:
                usage = sum(await self.metrics.external(name, ns, msel))
                replicas, per_pod = self.calc.per_pod_replicas(
                    status_replicas, usage, quantity.milli_value(target["averageValue"]))
                current = {"averageValue": milli_quantity(per_pod)}
                failure = f"failed to get {name} external metric"
            elif target.get("value") is not None:
                usage = sum(await self.metrics.external(name, ns, msel))
                replicas = self.calc.usage_ratio_replicas(
                    spec_replicas, usage / quantity.milli_value(target["value"]), pods)
                current = {"value": milli_quantity(usage)}
                failure = f"failed to get external metric {name}"
            else:
                raise _Failed("FailedGetExternalMetric", "invalid external metric source: "
                              "neither a value target nor an average value target was set")
        except MetricError as e:
            failure = f"failed to get external metric {name}"
            raise _Failed("FailedGetExternalMetric",
                          f"{failure}: unable to get external metric {ns}/{name}/"
                          f"{_go_selector(metric.get('selector'))}: {e}") from None
        return _Outcome(replicas, label, {"type": "External", "external": {
            "metric": metric, "current": current}})

    async def _resource_of(self, ref: Obj) -> tuple[str, str]:
        """(apiVersion, plural) served for a reference's group and kind."""
        api_version, kind = ref.get("apiVersion") or "", ref.get("kind") or ""
        group, _, version = api_version.rpartition("/")
        hit = self._plurals.get((group, kind))
        if hit is None:
            for r in await discover(self.client, preferred_only=False):
                self._plurals.setdefault((r.group, r.kind), (r.api_version, r.plural))
                if r.group == group and r.kind == kind and r.version == version:
                    self._plurals[(group, kind)] = (r.api_version, r.plural)
            hit = self._plurals.get((group, kind))
        if hit is None:
            raise LookupError(f'no matches for kind "{kind}" in group "{group}"')
        return hit

    # -- status ---------------------------------------------------------------------------

    def _set_condition(self, hpa: Obj, cond: Condition, now: float) -> None:
        typ, status, reason, message = cond
        conds = hpa.setdefault("status", {}).setdefault("conditions", [])
        for c in conds:
            if c.get("type") == typ:
                if c.get("status") != status:
                    c["lastTransitionTime"] = rfc3339(now)
                c.update(status=status, reason=reason, message=message)
                return
        conds.append({"type": typ, "status": status, "lastTransitionTime": rfc3339(now),
                      "reason": reason, "message": message})

    def _set_status(self, hpa: Obj, current: int, desired: int, metrics: list[Obj], *,
                    rescale: bool, now: float) -> None:
        old = hpa.get("status") or {}
        status: Obj = {"currentReplicas": current, "desiredReplicas": desired}
        if old.get("lastScaleTime"):
            status["lastScaleTime"] = old["lastScaleTime"]
        if rescale:
            status["lastScaleTime"] = rfc3339(now)
        if metrics:
            status["currentMetrics"] = metrics
        if old.get("conditions"):
            status["conditions"] = old["conditions"]
        hpa["status"] = status

    async def _write_status(self, hpa: Obj, original: Obj) -> None:
        if hpa.get("status") == original:
            return
        try:
            await self.client.update_status(API, PLURAL, hpa)
        except StatusError as e:
            if e.code == 409:  # a newer spec: the next sync writes from it
                self.queue.add(object_key(hpa))
                return
            raise

