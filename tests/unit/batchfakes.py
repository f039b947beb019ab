"""An in-memory API for Job and CronJob controller tests: a fake client (create, get,
patch, delete, update_status) whose objects are also what fake informers show, a
hand-driven node (pods succeed or fail when a test says so), and defaulted Jobs."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from typing import Any

from kybernetes.aio.clock import FakeClock
from kybernetes.api.defaults.batch import default_job, generate_job_selector
from kybernetes.api.errors import StatusError
from kybernetes.api.meta import object_key, random_suffix, rfc3339

Obj = dict[str, Any]


class FakeInformer:
    """Just what the controllers read of an :class:`~kybernetes.client.Informer`."""

    def __init__(self) -> None:
        self.objects: dict[str, Obj] = {}
        self.index_funcs: dict[str, Callable[[Obj], Iterable[str]]] = {}
        self.handlers: list[tuple[Any, Any, Any]] = []

    def get(self, key: str) -> Obj | None:
        return self.objects.get(key)

    def list(self) -> list[Obj]:
        return list(self.objects.values())

    def add_index(self, name: str, fn: Callable[[Obj], Iterable[str]]) -> None:
        self.index_funcs[name] = fn

    def by_index(self, name: str, value: str) -> list[Obj]:
        fn = self.index_funcs[name]
        return [o for _, o in sorted(self.objects.items()) if value in fn(o)]

    def add_handler(self, on_add: Any = None, on_update: Any = None,
                    on_delete: Any = None) -> None:
        self.handlers.append((on_add, on_update, on_delete))

    def store(self, obj: Obj) -> None:
        key = object_key(obj)
        old = self.objects.get(key)
        self.objects[key] = obj
        for on_add, on_update, _ in self.handlers:
            if old is None and on_add:
                on_add(obj)
            elif old is not None and on_update:
                on_update(old, obj)

    def remove(self, key: str) -> None:
        old = self.objects.pop(key, None)
        for _, _, on_delete in self.handlers:
            if old is not None and on_delete:
                on_delete(old)


_RESOURCES = {("batch/v1", "jobs"): "Job", ("batch/v1", "cronjobs"): "CronJob",
              ("v1", "pods"): "Pod", ("v1", "events"): "Event"}


class FakeAPI:
    """The API server, its store and the informers' view of it in one (no lag)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.informers = {res: FakeInformer() for res in _RESOURCES}
        self.rv = itertools.count(1)
        self.uids = itertools.count(1)
        self.events: list[Obj] = []
        self.calls: list[tuple[str, str, str]] = []

    @property
    def jobs(self) -> FakeInformer:
        return self.informers["batch/v1", "jobs"]

    @property
    def pods(self) -> FakeInformer:
        return self.informers["v1", "pods"]

    @property
    def cronjobs(self) -> FakeInformer:
        return self.informers["batch/v1", "cronjobs"]

    def _informer(self, api_version: str, plural: str) -> FakeInformer:
        return self.informers[api_version, plural]

    def _save(self, api_version: str, plural: str, obj: Obj) -> Obj:
        obj["metadata"]["resourceVersion"] = str(next(self.rv))
        self._informer(api_version, plural).store(obj)
        return copy.deepcopy(obj)

    def _get(self, api_version: str, plural: str, name: str, namespace: str | None) -> Obj:
        obj = self._informer(api_version, plural).get(f"{namespace}/{name}")
        if obj is None:
            raise StatusError(404, "NotFound", f'{plural} "{name}" not found')
        return obj

    # -- the client's verbs -----------------------------------------------------------

    async def create(self, api_version: str, plural: str, obj: Obj, *,
                     namespace: str | None = None, **_: Any) -> Obj:
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        md["namespace"] = namespace or md.get("namespace") or "default"
        if plural == "events":
            self.events.append(obj)
            return obj
        if not md.get("name"):
            md["name"] = md["generateName"] + random_suffix()
        if self._informer(api_version, plural).get(object_key(obj)) is not None:
            raise StatusError(409, "AlreadyExists", f'{plural} "{md["name"]}" already exists')
        md["uid"] = f"uid-{next(self.uids)}"
        md["creationTimestamp"] = rfc3339(self.clock.now())
        obj["apiVersion"], obj["kind"] = api_version, _RESOURCES[api_version, plural]
        if plural == "pods":
            obj["status"] = {"phase": "Pending"}
        self.calls.append(("create", plural, md["name"]))
        return self._save(api_version, plural, obj)

    async def get(self, api_version: str, plural: str, name: str, *,
                  namespace: str | None = None, **_: Any) -> Obj:
        return copy.deepcopy(self._get(api_version, plural, name, namespace))

    async def patch(self, api_version: str, plural: str, name: str, patch: Obj, *,
                    namespace: str | None = None, **_: Any) -> Obj:
        if plural == "events":
            return {}
        obj = copy.deepcopy(self._get(api_version, plural, name, namespace))
        md = obj["metadata"]
        drop = (patch.get("metadata") or {}).get("$deleteFromPrimitiveList/finalizers") or []
        md["finalizers"] = [f for f in md.get("finalizers") or [] if f not in drop]
        if not md["finalizers"]:
            del md["finalizers"]
        self.calls.append(("patch", plural, name))
        if md.get("deletionTimestamp") and not md.get("finalizers"):
            self._informer(api_version, plural).remove(object_key(obj))
            return obj
        return self._save(api_version, plural, obj)

    async def delete(self, api_version: str, plural: str, name: str, *,
                     namespace: str | None = None, **options: Any) -> Obj:
        obj = copy.deepcopy(self._get(api_version, plural, name, namespace))
        self.calls.append(("delete", plural, name))
        if obj["metadata"].get("finalizers"):
            # as if the node stopped it at once: final deletion asked, finalizers left
            obj["metadata"]["deletionTimestamp"] = rfc3339(self.clock.now())
            obj["metadata"]["deletionGracePeriodSeconds"] = 0
            return self._save(api_version, plural, obj)
        self._informer(api_version, plural).remove(object_key(obj))
        return {"kind": "Status", "status": "Success"}

    async def update_status(self, api_version: str, plural: str, obj: Obj, **_: Any) -> Obj:
        md = obj["metadata"]
        current = copy.deepcopy(self._get(api_version, plural, md["name"], md["namespace"]))
        if md.get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise StatusError(409, "Conflict", "the object has been modified")
        current["status"] = copy.deepcopy(obj.get("status") or {})
        self.calls.append(("status", plural, md["name"]))
        return self._save(api_version, plural, current)

    # -- what tests do ------------------------------------------------------------------

    def add_job(self, name: str, spec: Obj, *, namespace: str = "default",
                template: Obj | None = None, **metadata: Any) -> Obj:
        """A Job as the API server would store it (defaulted, with its selector)."""
        job: Obj = {"apiVersion": "batch/v1", "kind": "Job",
                    "metadata": {"name": name, "namespace": namespace,
                                 "uid": f"uid-{next(self.uids)}",
                                 "creationTimestamp": rfc3339(self.clock.now()), **metadata},
                    "spec": {**spec, "template": template or {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "busybox"}]}}}}
        generate_job_selector(job)
        default_job(job)
        return self._save("batch/v1", "jobs", job)

    def set_spec(self, kind: str, name: str, namespace: str = "default", **spec: Any) -> None:
        plural = {"Job": "jobs", "CronJob": "cronjobs"}[kind]
        obj = copy.deepcopy(self._get("batch/v1", plural, name, namespace))
        obj["spec"].update(spec)
        self._save("batch/v1", plural, obj)

    def job(self, name: str, namespace: str = "default") -> Obj:
        return copy.deepcopy(self._get("batch/v1", "jobs", name, namespace))

    def pods_of(self, job: str) -> list[Obj]:
        return sorted((p for p in self.pods.list()
                       if p["metadata"]["labels"].get("job-name") == job),
                      key=lambda p: (p["metadata"]["creationTimestamp"],
                                     int(p["metadata"]["uid"].split("-")[1])))

    def run_pod(self, pod: Obj, *, ready: bool = True) -> None:
        """The node started the pod."""
        obj = copy.deepcopy(self._get("v1", "pods", pod["metadata"]["name"],
                                      pod["metadata"]["namespace"]))
        obj["status"] = {"phase": "Running", "conditions": [
            {"type": "Ready", "status": "True" if ready else "False"}]}
        self._save("v1", "pods", obj)

    def end_pod(self, pod: Obj, exit_code: int = 0, *, conditions: list[Obj] | None = None
                ) -> None:
        """The pod's only container exited now."""
        obj = copy.deepcopy(self._get("v1", "pods", pod["metadata"]["name"],
                                      pod["metadata"]["namespace"]))
        restart = obj["spec"].get("restartPolicy", "Never")
        phase = "Succeeded" if exit_code == 0 else "Failed" if restart == "Never" else "Running"
        obj["status"] = {"phase": phase, "conditions": conditions or [],
                         "containerStatuses": [{"name": "main", "restartCount": 0, "state": {
                             "terminated": {"exitCode": exit_code,
                                            "finishedAt": rfc3339(self.clock.now())}}}]}
        self._save("v1", "pods", obj)

    def reasons(self, kind: str | None = None) -> list[str]:
        return [e["reason"] for e in self.events
                if kind is None or e["involvedObject"]["kind"] == kind]

    def messages(self) -> list[tuple[str, str]]:
        return [(e["reason"], e["message"]) for e in self.events]
