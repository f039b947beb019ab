// The kybernetes dashboard: one page, no build step. It reads the cluster through the
// API with the user's own bearer token (one multiplexed watch stream keeps every list
// current), writes through the API (scale), and reads the charts' history from
// /dashboard/api/history.

const RESOURCES = [
  ["pods", "/api/v1/pods"],
  ["nodes", "/api/v1/nodes"],
  ["events", "/api/v1/events"],
  ["namespaces", "/api/v1/namespaces"],
  ["resourcequotas", "/api/v1/resourcequotas"],
  ["services", "/api/v1/services"],
  ["deployments", "/apis/apps/v1/deployments"],
  ["replicasets", "/apis/apps/v1/replicasets"],
  ["statefulsets", "/apis/apps/v1/statefulsets"],
  ["daemonsets", "/apis/apps/v1/daemonsets"],
  ["jobs", "/apis/batch/v1/jobs"],
  ["cronjobs", "/apis/batch/v1/cronjobs"],
  ["pytorchjobs", "/apis/kubeflow.org/v1/pytorchjobs"],
  ["tfjobs", "/apis/kubeflow.org/v1/tfjobs"],
  ["endpointslices", "/apis/discovery.k8s.io/v1/endpointslices"],
  ["ingresses", "/apis/networking.k8s.io/v1/ingresses"],
];
const TOKEN_KEY = "kyb-token";
const GPU = "nvidia.com/gpu";
const GPU_ALLOCATION = "kybernetes.io/gpu-allocation";
const CANARY = "nginx.ingress.kubernetes.io/canary";
const CANARY_WEIGHT = "nginx.ingress.kubernetes.io/canary-weight";

const $ = (sel) => document.querySelector(sel);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  objects: Object.fromEntries(RESOURCES.map(([name]) => [name, new Map()])),
  synced: false,
  stream: null,
  namespace: "",
  forbidden: [],
  latest: {pod: {}, node: {}, service: {}},
};

// -- helpers -------------------------------------------------------------------------------

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) => (
    {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

const SUFFIX = {n: 1e-9, u: 1e-6, m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60};

function qty(s) {
  if (s === undefined || s === null || s === "") return 0;
  const m = /^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)$/.exec(String(s));
  if (!m) return 0;
  return parseFloat(m[1]) * (SUFFIX[m[2]] ?? 1);
}

function bytes(n) {
  if (!isFinite(n)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

function cores(n) { return !isFinite(n) ? "–" : n < 1 ? `${Math.round(n * 1000)}m` : n.toFixed(2); }

function age(ts) {
  if (!ts) return "";
  let s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  if (s < 120) return `${Math.floor(s)}s`;
  s /= 60; if (s < 120) return `${Math.floor(s)}m`;
  s /= 60; if (s < 48) return `${Math.floor(s)}h`;
  return `${Math.floor(s / 24)}d`;
}

const key = (o) => `${o.metadata.namespace || ""}/${o.metadata.name}`;
const list = (name) => [...state.objects[name].values()].filter(
  (o) => !state.namespace || !o.metadata.namespace || o.metadata.namespace === state.namespace);
const byName = (a, b) => key(a).localeCompare(key(b));

function bar(used, total, label) {
  const pct = total > 0 ? Math.min(100, (100 * used) / total) : 0;
  const cls = pct > 90 ? "hot" : pct > 70 ? "warm" : "";
  return `<div class="bar ${cls}" title="${esc(label)}" data-pct="${pct.toFixed(1)}">` +
    `<span style="width:${pct}%"></span><em>${esc(label)}</em></div>`;
}

// -- API -----------------------------------------------------------------------------------

class APIError extends Error {
  constructor(code, status) {
    super((status && status.message) || `HTTP ${code}`);
    this.code = code;
    this.status = status;
  }
}

async function api(path, opts = {}) {
  const headers = {Authorization: `Bearer ${state.token}`, Accept: "application/json",
    ...(opts.headers || {})};
  const res = await fetch(path, {...opts, headers});
  if (res.status === 401) {
    logout("Unauthorized: the token was refused.");
    throw new APIError(401, null);
  }
  if (!res.ok && !opts.raw) {
    let status = null;
    try { status = await res.json(); } catch (e) { /* not a Status */ }
    throw new APIError(res.status, status);
  }
  return opts.raw ? res : res.json();
}

function showError(msg) {
  const b = $("#banner");
  b.textContent = msg;
  b.hidden = !msg;
  if (msg) setTimeout(() => { if (b.textContent === msg) b.hidden = true; }, 8000);
}

// -- the watch stream ------------------------------------------------------------------------

async function openStream() {
  if (state.stream) state.stream.abort();
  const ctrl = new AbortController();
  state.stream = ctrl;
  const paths = RESOURCES.map(([, p]) => p).join(",");
  const ns = state.namespace ? `&namespace=${encodeURIComponent(state.namespace)}` : "";
  let backoff = 500;
  while (!ctrl.signal.aborted) {
    const pending = Object.fromEntries(RESOURCES.map(([name]) => [name, new Map()]));
    const forbidden = [];
    let synced = false;
    try {
      const res = await api(`/dashboard/api/watch?resources=${encodeURIComponent(paths)}${ns}`,
        {signal: ctrl.signal, raw: true});
      if (!res.ok) throw new APIError(res.status, await res.json().catch(() => null));
      setConn(true);
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buf = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += decoder.decode(value, {stream: true});
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.trim()) continue;
          const ev = JSON.parse(line);
          if (ev.type === "SYNCED") {
            synced = true;
            state.objects = pending;
            state.forbidden = forbidden;
            state.synced = true;
            backoff = 500;
            render();
            continue;
          }
          if (ev.type === "ERROR") {  // a kind this server does not serve, or the token may not see
            if (ev.object.code === 403) forbidden.push(RESOURCES[ev.r][0]);
            continue;
          }
          const objs = (synced ? state.objects : pending)[RESOURCES[ev.r][0]];
          if (ev.type === "DELETED") objs.delete(key(ev.object));
          else objs.set(key(ev.object), ev.object);
          if (synced) scheduleRender();
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
      if (e.code === 401) return;
      console.warn("watch stream ended", e);
    }
    setConn(false);
    await new Promise((r) => setTimeout(r, backoff));
    backoff = Math.min(backoff * 2, 10000);
  }
}

function setConn(live) {
  const c = $("#conn");
  c.className = live ? "conn live" : "conn";
  c.textContent = live ? "live" : "reconnecting";
}

let renderTimer = null;
let lastRender = 0;
function scheduleRender() {
  if (renderTimer) return;
  const wait = Math.max(0, 250 - (performance.now() - lastRender));
  renderTimer = setTimeout(() => { renderTimer = null; render(); }, wait);
}

// -- workloads and their pods ----------------------------------------------------------------

function ownerOf(o) {
  const refs = o.metadata.ownerReferences || [];
  return refs.find((r) => r.controller) || refs[0] || null;
}

function workloadOf(pod) {
  const ref = ownerOf(pod);
  if (!ref) return null;
  if (ref.kind === "ReplicaSet") {
    const rs = state.objects.replicasets.get(`${pod.metadata.namespace}/${ref.name}`);
    const up = rs && ownerOf(rs);
    if (up && up.kind === "Deployment") return `Deployment/${pod.metadata.namespace}/${up.name}`;
  }
  if (ref.kind === "Job") {
    const job = state.objects.jobs.get(`${pod.metadata.namespace}/${ref.name}`);
    const up = job && ownerOf(job);
    if (up && up.kind === "CronJob") return `CronJob/${pod.metadata.namespace}/${up.name}`;
  }
  return `${ref.kind}/${pod.metadata.namespace}/${ref.name}`;
}

function podsByWorkload() {
  const out = new Map();
  for (const pod of list("pods")) {
    const w = workloadOf(pod) || `Pod/${key(pod)}`;
    if (!out.has(w)) out.set(w, []);
    out.get(w).push(pod);
  }
  for (const pods of out.values()) pods.sort(byName);
  return out;
}

function podReady(pod) {
  return ((pod.status || {}).conditions || []).some((c) => c.type === "Ready" && c.status === "True");
}

function podStatus(pod) {
  const st = pod.status || {};
  if (pod.metadata.deletionTimestamp) return "Terminating";
  for (const cs of [...(st.initContainerStatuses || []), ...(st.containerStatuses || [])]) {
    const s = cs.state || {};
    if (s.waiting && s.waiting.reason && s.waiting.reason !== "PodInitializing") return s.waiting.reason;
    if (s.terminated && s.terminated.reason && st.phase !== "Succeeded" && s.terminated.exitCode)
      return s.terminated.reason;
  }
  return st.reason || st.phase || "Pending";
}

function podChip(pod) {
  const status = podStatus(pod);
  const cls = podReady(pod) ? "ready" : status === "Succeeded" ? "done" :
    ["Failed", "Error", "CrashLoopBackOff", "OOMKilled", "ImagePullBackOff"].includes(status) ? "bad" : "wait";
  return `<a class="chip ${cls}" data-pod="${esc(pod.metadata.name)}" data-status="${esc(status)}" ` +
    `href="#/pod/${esc(pod.metadata.namespace)}/${esc(pod.metadata.name)}" ` +
    `title="${esc(status)}">${esc(pod.metadata.name)}</a>`;
}

function condition(obj, type) {
  return ((obj.status || {}).conditions || []).find((c) => c.type === type && c.status === "True");
}

function workloadRows() {
  const rows = [];
  for (const d of list("deployments")) {
    const s = d.status || {};
    const want = (d.spec || {}).replicas ?? 1;
    rows.push({kind: "Deployment", obj: d, ready: `${s.readyReplicas || 0}/${want}`,
      ok: (s.readyReplicas || 0) >= want, replicas: want, scale: "apps/v1/deployments",
      status: `${s.updatedReplicas || 0} up-to-date, ${s.availableReplicas || 0} available`});
  }
  for (const d of list("statefulsets")) {
    const s = d.status || {};
    const want = (d.spec || {}).replicas ?? 1;
    rows.push({kind: "StatefulSet", obj: d, ready: `${s.readyReplicas || 0}/${want}`,
      ok: (s.readyReplicas || 0) >= want, replicas: want, scale: "apps/v1/statefulsets",
      status: `${s.currentReplicas || 0} current`});
  }
  for (const d of list("daemonsets")) {
    const s = d.status || {};
    rows.push({kind: "DaemonSet", obj: d, ready: `${s.numberReady || 0}/${s.desiredNumberScheduled || 0}`,
      ok: (s.numberReady || 0) >= (s.desiredNumberScheduled || 0),
      status: `${s.numberAvailable || 0} available`});
  }
  for (const j of list("jobs")) rows.push(jobRow("Job", j));
  for (const c of list("cronjobs")) {
    const s = c.status || {};
    rows.push({kind: "CronJob", obj: c, ready: (c.spec || {}).schedule || "", ok: true,
      status: `${(s.active || []).length} active, last ${s.lastScheduleTime ? age(s.lastScheduleTime) + " ago" : "never"}` +
        ((c.spec || {}).suspend ? ", suspended" : "")});
  }
  for (const j of list("pytorchjobs")) rows.push(jobRow("PyTorchJob", j));
  for (const j of list("tfjobs")) rows.push(jobRow("TFJob", j));
  return rows.sort((a, b) => a.kind.localeCompare(b.kind) || byName(a.obj, b.obj));
}

function jobRow(kind, j) {
  const s = j.status || {};
  const failed = condition(j, "Failed");
  const done = condition(j, "Complete") || condition(j, "Succeeded");
  let status, ok;
  if (failed) {
    status = `Failed: ${failed.reason || ""}${failed.message ? ` (${failed.message})` : ""}`;
    ok = false;
  } else if (done) {
    status = "Complete"; ok = true;
  } else if (condition(j, "Suspended")) {
    status = "Suspended"; ok = true;
  } else {
    const running = condition(j, "Running");
    status = running ? "Running" : "Pending";
    ok = true;
  }
  let ready;
  if (kind === "Job") {
    ready = `${s.succeeded || 0}/${(j.spec || {}).completions ?? 1} succeeded` + (s.failed ? `, ${s.failed} failed` : "");
  } else {
    const rs = s.replicaStatuses || {};
    ready = Object.entries(rs).map(([t, r]) => `${t} ${r.active || 0}/${r.succeeded || 0}/${r.failed || 0}`).join(", ");
  }
  return {kind, obj: j, ready, ok, status, failed: !!failed};
}

// -- pages ----------------------------------------------------------------------------------

function nodeAllocation(node, pods) {
  const alloc = (node.status || {}).allocatable || {};
  const used = {cpu: 0, memory: 0, gpu: 0, pods: 0};
  for (const p of pods) {
    if (p.spec.nodeName !== node.metadata.name) continue;
    const phase = (p.status || {}).phase;
    if (phase === "Succeeded" || phase === "Failed") continue;
    used.pods++;
    for (const c of p.spec.containers || []) {
      const r = (c.resources || {}).requests || {};
      used.cpu += qty(r.cpu);
      used.memory += qty(r.memory);
      used.gpu += qty(r[GPU] || ((c.resources || {}).limits || {})[GPU]);
    }
  }
  return {used, total: {cpu: qty(alloc.cpu), memory: qty(alloc.memory), gpu: qty(alloc[GPU]),
    pods: qty(alloc.pods)}};
}

function nodeReady(node) { return condition(node, "Ready") ? "Ready" : "NotReady"; }

function pageOverview() {
  const pods = [...state.objects.pods.values()];
  const nsPods = list("pods");
  const phases = {};
  for (const p of nsPods) {
    const ph = (p.status || {}).phase || "Pending";
    phases[ph] = (phases[ph] || 0) + 1;
  }
  const ready = nsPods.filter(podReady).length;
  const nodes = [...state.objects.nodes.values()].sort(byName);
  const shown = nodes.slice(0, 50);
  const nodeRows = shown.map((n) => {
    const a = nodeAllocation(n, pods);
    return `<tr data-node="${esc(n.metadata.name)}"><td><a href="#/nodes">${esc(n.metadata.name)}</a></td>
      <td class="${nodeReady(n) === "Ready" ? "ok" : "bad"}">${nodeReady(n)}</td>
      <td>${bar(a.used.cpu, a.total.cpu, `${cores(a.used.cpu)} / ${cores(a.total.cpu)}`)}</td>
      <td>${bar(a.used.memory, a.total.memory, `${bytes(a.used.memory)} / ${bytes(a.total.memory)}`)}</td>
      <td>${a.total.gpu ? bar(a.used.gpu, a.total.gpu, `${a.used.gpu} / ${a.total.gpu}`) : "–"}</td>
      <td>${a.used.pods}</td></tr>`;
  }).join("");
  const warnings = list("events").filter((e) => e.type === "Warning")
    .sort((a, b) => evTime(b).localeCompare(evTime(a))).slice(0, 20);
  const apps = workloadRows().filter((r) => r.kind !== "CronJob").slice(0, 100);
  return `<h1>Overview</h1>
  <div class="tiles">
    <div class="card tile"><b data-testid="nodes-count">${nodes.length}</b> nodes</div>
    <div class="card tile"><b data-testid="pods-count">${nsPods.length}</b> pods</div>
    <div class="card tile"><b data-testid="ready-count">${ready}</b> ready</div>
    ${["Running", "Pending", "Succeeded", "Failed"].map((ph) =>
      `<div class="card tile phase-${ph}"><b data-phase="${ph}">${phases[ph] || 0}</b> ${ph}</div>`).join("")}
  </div>
  <div class="card"><h2>Workloads</h2>
    <table id="overview-workloads"><tr><th>kind</th><th>name</th><th>ready</th><th>status</th></tr>
    ${apps.map((r) => `<tr data-workload="${esc(r.obj.metadata.name)}" class="${r.ok ? "" : "warn"}">
      <td>${r.kind}</td><td>${esc(key(r.obj))}</td><td class="ready">${esc(r.ready)}</td>
      <td class="status">${esc(r.status)}</td></tr>`).join("")}
    </table></div>
  <div class="card"><h2>Nodes</h2>
    <table><tr><th>name</th><th>status</th><th>CPU requested</th><th>memory requested</th><th>GPUs</th><th>pods</th></tr>
    ${nodeRows}</table>${nodes.length > shown.length ? `<p>and ${nodes.length - shown.length} more on <a href="#/nodes">Nodes</a></p>` : ""}</div>
  <div class="card"><h2>Recent warnings</h2>${eventTable(warnings)}</div>`;
}

function evTime(e) {
  return e.lastTimestamp || e.eventTime || (e.metadata || {}).creationTimestamp || "";
}

function eventTable(events) {
  if (!events.length) return "<p class='muted'>none</p>";
  return `<table class="events"><tr><th>age</th><th>type</th><th>reason</th><th>object</th><th>message</th></tr>
  ${events.map((e) => `<tr class="${e.type === "Warning" ? "warn" : ""}"><td>${age(evTime(e))}</td><td>${esc(e.type)}</td>
    <td>${esc(e.reason)}</td><td>${esc(`${(e.involvedObject || {}).kind || ""}/${(e.involvedObject || {}).name || ""}`)}</td>
    <td>${esc(e.message)}</td></tr>`).join("")}</table>`;
}

function pageWorkloads() {
  const groups = podsByWorkload();
  const rows = workloadRows();
  const listed = new Set();
  const html = rows.map((r) => {
    const id = `${r.kind}/${key(r.obj)}`;
    listed.add(id);
    const pods = groups.get(id) || [];
    const scale = r.scale ? `<form class="scale" data-scale="${esc(r.scale)}" data-ns="${esc(r.obj.metadata.namespace)}" data-name="${esc(r.obj.metadata.name)}">
        <input type="number" min="0" max="1000" name="replicas" id="scale-${esc(r.kind)}-${esc(r.obj.metadata.namespace)}-${esc(r.obj.metadata.name)}" value="${r.replicas}" aria-label="replicas">
        <button type="submit">Scale</button></form>` : "";
    const shownPods = pods.slice(0, 60);
    return `<tr data-workload="${esc(r.obj.metadata.name)}" data-kind="${r.kind}" class="${r.ok ? "" : "warn"}">
      <td>${r.kind}</td><td>${esc(key(r.obj))}</td><td class="ready">${esc(r.ready)}</td>
      <td class="status">${esc(r.status)}</td><td>${age(r.obj.metadata.creationTimestamp)}</td><td>${scale}</td></tr>
      <tr class="pods"><td></td><td colspan="5" data-pods-of="${esc(r.obj.metadata.name)}">${shownPods.map(podChip).join("")}
      ${pods.length > shownPods.length ? `<span class="muted">and ${pods.length - shownPods.length} more</span>` : ""}</td></tr>`;
  }).join("");
  const loose = [...groups.entries()].filter(([id]) => !listed.has(id) && !id.startsWith("ReplicaSet/"));
  return `<h1>Workloads</h1>
  <div class="card"><table id="workloads"><tr><th>kind</th><th>name</th><th>ready</th><th>status</th><th>age</th><th>scale</th></tr>
  ${html}</table></div>
  <div class="card"><h2>Other pods</h2>${loose.map(([id, pods]) => `<div><span class="muted">${esc(id.split("/")[0])}</span> ${pods.slice(0, 200).map(podChip).join("")}</div>`).join("") || "<p class='muted'>none</p>"}</div>`;
}

function pagePod(ns, name) {
  const pod = state.objects.pods.get(`${ns}/${name}`);
  if (!pod) return `<h1>Pod ${esc(ns)}/${esc(name)}</h1><p class="muted">not found (deleted?)</p>`;
  const st = pod.status || {};
  const statuses = Object.fromEntries((st.containerStatuses || []).map((c) => [c.name, c]));
  const containers = (pod.spec.containers || []).map((c) => {
    const s = statuses[c.name] || {};
    const stateName = Object.keys(s.state || {})[0] || "waiting";
    const detail = (s.state || {})[stateName] || {};
    const last = (s.lastState || {}).terminated;
    return `<tr data-container="${esc(c.name)}"><td>${esc(c.name)}</td><td>${esc(c.image || "")}</td>
      <td><code>${esc([...(c.command || []), ...(c.args || [])].join(" "))}</code></td>
      <td>${esc(stateName)}${detail.reason ? `: ${esc(detail.reason)}` : ""}${detail.exitCode !== undefined ? ` (exit ${detail.exitCode})` : ""}</td>
      <td>${s.ready ? "yes" : "no"}</td><td>${s.restartCount || 0}${last ? ` (last: ${esc(last.reason)}, exit ${last.exitCode})` : ""}</td>
      <td>${esc(JSON.stringify((c.resources || {}).requests || {}))}</td></tr>`;
  }).join("");
  const conditions = (st.conditions || []).map((c) => `<tr><td>${esc(c.type)}</td><td>${esc(c.status)}</td>
    <td>${esc(c.reason || "")}</td><td>${esc(c.message || "")}</td></tr>`).join("");
  const events = list("events").filter((e) => (e.involvedObject || {}).name === name &&
      (e.involvedObject || {}).namespace === ns && (e.involvedObject || {}).kind === "Pod")
    .sort((a, b) => evTime(b).localeCompare(evTime(a)));
  return `<h1>Pod ${esc(ns)}/${esc(name)} <span class="status" data-testid="pod-status">${esc(podStatus(pod))}</span></h1>
  <div class="card"><table class="kv">
    <tr><th>node</th><td>${esc(pod.spec.nodeName || "")}</td><th>IP</th><td>${esc(st.podIP || "")}</td></tr>
    <tr><th>owner</th><td>${esc(workloadOf(pod) || "")}</td><th>age</th><td>${age(pod.metadata.creationTimestamp)}</td></tr>
    <tr><th>GPUs</th><td>${esc(((pod.metadata.annotations || {})["kybernetes.io/gpu-index"]) || "–")}</td><th>QoS</th><td>${esc(st.qosClass || "")}</td></tr>
  </table></div>
  <div class="card"><h2>Containers</h2><table><tr><th>name</th><th>image</th><th>command</th><th>state</th><th>ready</th><th>restarts</th><th>requests</th></tr>${containers}</table></div>
  <div class="card"><h2>Conditions</h2><table><tr><th>type</th><th>status</th><th>reason</th><th>message</th></tr>${conditions}</table></div>
  <div class="card"><h2>Events</h2>${eventTable(events)}</div>`;
}

function serviceTraffic(ns, name) {
  const v = state.latest.service[`${ns}/${name}`];
  if (!v) return {rate: "–", errors: "–", latency: "–"};
  return {rate: v[0].toFixed(1), errors: v[1].toFixed(2),
    latency: v[2] === null || !isFinite(v[2]) ? "–" : `${(v[2] * 1000).toFixed(1)} ms`};
}

function pageServices() {
  const slices = list("endpointslices");
  const services = list("services").sort(byName).map((s) => {
    const eps = slices.filter((sl) => sl.metadata.namespace === s.metadata.namespace &&
      (sl.metadata.labels || {})["kubernetes.io/service-name"] === s.metadata.name);
    const addrs = eps.flatMap((sl) => (sl.endpoints || []).map((e) => ({ip: (e.addresses || [])[0],
      ready: (e.conditions || {}).ready !== false, pod: ((e.targetRef || {}).name) || ""})));
    const ports = (s.spec.ports || []).map((p) => `${p.port}${p.nodePort ? `:${p.nodePort}` : ""}/${p.protocol || "TCP"}`).join(", ");
    const t = serviceTraffic(s.metadata.namespace, s.metadata.name);
    return `<tr data-service="${esc(s.metadata.name)}"><td>${esc(key(s))}</td><td>${esc(s.spec.type || "ClusterIP")}</td>
      <td>${esc(s.spec.clusterIP || "")}</td><td>${esc(ports)}</td>
      <td>${addrs.map((a) => `<span class="chip ${a.ready ? "ready" : "wait"}" title="${esc(a.pod)}">${esc(a.ip)}</span>`).join("") || "<span class='muted'>none</span>"}</td>
      <td>${t.rate}</td><td>${t.errors}</td><td>${t.latency}</td></tr>`;
  }).join("");
  const ingresses = list("ingresses").sort(byName);
  const canaries = ingresses.filter((i) => (i.metadata.annotations || {})[CANARY] === "true");
  const rows = ingresses.map((ing) => {
    const canary = (ing.metadata.annotations || {})[CANARY] === "true";
    const rules = (ing.spec.rules || []).flatMap((r) => ((r.http || {}).paths || []).map((p) =>
      `${esc(r.host || "*")}${esc(p.path || "/")} → ${esc((p.backend.service || {}).name)}:${esc(((p.backend.service || {}).port || {}).number || ((p.backend.service || {}).port || {}).name || "")}`));
    return `<tr data-ingress="${esc(ing.metadata.name)}"><td>${esc(key(ing))}</td><td>${canary ? "canary" : ""}</td><td>${rules.join("<br>")}</td>
      <td>${esc(((ing.status || {}).loadBalancer || {}).ingress ? ing.status.loadBalancer.ingress.map((x) => x.ip || x.hostname).join(", ") : "")}</td></tr>`;
  }).join("");
  const splits = canaries.map((c) => canarySplit(c, ingresses)).join("");
  return `<h1>Services and ingresses</h1>
  <div class="card"><h2>Services</h2><table id="services"><tr><th>name</th><th>type</th><th>cluster IP</th><th>ports</th><th>endpoints</th><th>req/s</th><th>errors/s</th><th>latency</th></tr>${services}</table></div>
  <div class="card"><h2>Ingresses</h2><table id="ingresses"><tr><th>name</th><th></th><th>rules</th><th>address</th></tr>${rows}</table></div>
  <div class="card"><h2>Canary traffic split</h2>${splits || "<p class='muted'>no canary ingresses</p>"}</div>`;
}

function backends(ing) {
  return (ing.spec.rules || []).flatMap((r) => ((r.http || {}).paths || []).map((p) => ({
    host: r.host || "", path: p.path || "/", service: (p.backend.service || {}).name})));
}

function canarySplit(canary, ingresses) {
  const ann = canary.metadata.annotations || {};
  const weight = Math.max(0, Math.min(100, parseInt(ann[CANARY_WEIGHT] || "0", 10) || 0));
  const rows = [];
  for (const b of backends(canary)) {
    const primary = ingresses.find((i) => i !== canary && i.metadata.namespace === canary.metadata.namespace &&
      (i.metadata.annotations || {})[CANARY] !== "true" && backends(i).some((pb) => pb.host === b.host && pb.path === b.path));
    const main = primary ? backends(primary).find((pb) => pb.host === b.host && pb.path === b.path) : null;
    const variants = [[main ? main.service : "(none)", 100 - weight], [b.service, weight]];
    rows.push(`<tr><td colspan="5"><b>${esc(b.host || "*")}${esc(b.path)}</b>
      <div class="split">${variants.map(([s, w]) => `<span style="flex:${Math.max(w, 1)}" class="${s === b.service ? "canary" : "stable"}">${esc(s)} ${w}%</span>`).join("")}</div>
      ${ann["nginx.ingress.kubernetes.io/canary-by-header"] ? `<span class="muted">header ${esc(ann["nginx.ingress.kubernetes.io/canary-by-header"])}: ${esc(ann["nginx.ingress.kubernetes.io/canary-by-header-value"] || "always")} → canary</span>` : ""}</td></tr>`);
    for (const [s, w] of variants) {
      const t = serviceTraffic(canary.metadata.namespace, s);
      rows.push(`<tr data-variant="${esc(s)}"><td>${esc(s)}</td><td>${w}%</td><td>${t.rate} req/s</td><td>${t.errors} errors/s</td><td>${t.latency}</td></tr>`);
    }
  }
  return `<table class="canary" data-canary="${esc(canary.metadata.name)}"><tr><th>variant</th><th>weight</th><th>requests</th><th>errors</th><th>latency</th></tr>${rows.join("")}</table>`;
}

function parseGpuAllocation(text) {
  // "0: 1000/1000 (default/a 300, default/b 700); 1: 0/1000"
  return (text || "").split(";").map((part) => {
    const m = /^\s*(\d+):\s*(\d+)\/(\d+)\s*(?:\((.*)\))?\s*$/.exec(part);
    if (!m) return null;
    const pods = (m[4] || "").split(",").map((s) => s.trim()).filter(Boolean).map((s) => {
      const [pod, milli] = s.split(" ");
      return {pod, milli: parseInt(milli, 10) || 0};
    });
    return {index: +m[1], used: +m[2], total: +m[3], pods};
  }).filter(Boolean);
}

function pageNodes() {
  const pods = [...state.objects.pods.values()];
  const nodes = [...state.objects.nodes.values()].sort(byName);
  const rows = nodes.slice(0, 300).map((n) => {
    const a = nodeAllocation(n, pods);
    const labels = n.metadata.labels || {};
    const roles = Object.keys(labels).filter((l) => l.startsWith("node-role.kubernetes.io/")).map((l) => l.split("/")[1]);
    const usage = state.latest.node[n.metadata.name];
    const devices = parseGpuAllocation((n.metadata.annotations || {})[GPU_ALLOCATION]);
    const gpuCell = devices.length ? devices.map((d) => `<div class="device" data-device="${d.index}">GPU ${d.index}
        ${bar(d.used, d.total, `${d.used}/${d.total} milli`)}
        <span class="muted">${d.pods.map((p) => `${esc(p.pod)} ${p.milli === 1000 ? "whole" : `${p.milli}m`}`).join(", ")}</span></div>`).join("")
      : a.total.gpu ? bar(a.used.gpu, a.total.gpu, `${a.used.gpu}/${a.total.gpu}`) : "–";
    return `<tr data-node="${esc(n.metadata.name)}"><td>${esc(n.metadata.name)}<br><span class="muted">${esc(roles.join(",") || "")} ${esc(labels["nvidia.com/gpu.product"] || "")}</span></td>
      <td class="${nodeReady(n) === "Ready" ? "ok" : "bad"}">${nodeReady(n)}${n.spec.unschedulable ? ", SchedulingDisabled" : ""}</td>
      <td>${bar(a.used.cpu, a.total.cpu, `req ${cores(a.used.cpu)} / ${cores(a.total.cpu)}`)}${usage ? bar(usage[0], a.total.cpu, `used ${cores(usage[0])}`) : ""}</td>
      <td>${bar(a.used.memory, a.total.memory, `req ${bytes(a.used.memory)} / ${bytes(a.total.memory)}`)}${usage ? bar(usage[1], a.total.memory, `used ${bytes(usage[1])}`) : ""}</td>
      <td>${bar(a.used.pods, a.total.pods, `${a.used.pods} / ${a.total.pods}`)}</td>
      <td class="gpus">${gpuCell}</td></tr>`;
  }).join("");
  return `<h1>Nodes</h1><div class="card"><table id="nodes"><tr><th>name</th><th>status</th><th>CPU</th><th>memory</th><th>pods</th><th>GPU allocation (per device)</th></tr>${rows}</table>
  ${nodes.length > 300 ? `<p class="muted">first 300 of ${nodes.length}</p>` : ""}</div>`;
}

function pageNamespaces() {
  const quotas = list("resourcequotas");
  const pods = list("pods");
  const rows = list("namespaces").sort(byName).map((ns) => {
    const name = ns.metadata.name;
    const q = quotas.filter((x) => x.metadata.namespace === name).map((x) => {
      const hard = (x.status || {}).hard || (x.spec || {}).hard || {};
      const used = (x.status || {}).used || {};
      return `<div class="quota" data-quota="${esc(x.metadata.name)}"><b>${esc(x.metadata.name)}</b>${Object.keys(hard).sort().map((r) =>
        `<div class="quota-line"><span>${esc(r)}</span>${bar(qty(used[r]), qty(hard[r]), `${used[r] ?? 0} / ${hard[r]}`)}</div>`).join("")}</div>`;
    }).join("");
    return `<tr data-namespace="${esc(name)}"><td>${esc(name)}</td><td>${esc((ns.status || {}).phase || "")}</td>
      <td>${pods.filter((p) => p.metadata.namespace === name).length}</td><td>${q || "<span class='muted'>no quota</span>"}</td></tr>`;
  }).join("");
  return `<h1>Namespaces</h1><div class="card"><table id="namespaces"><tr><th>name</th><th>status</th><th>pods</th><th>quota usage</th></tr>${rows}</table></div>`;
}

// -- charts, logs ------------------------------------------------------------------------------

function drawChart(svg, times, values, fmt) {
  const pts = times.map((t, i) => [t, values[i]]).filter(([, v]) => v !== null);
  const w = 400, h = 120, pad = 4;
  if (!pts.length) {
    svg.innerHTML = `<text x="10" y="60" class="muted">no samples yet</text>`;
    svg.dataset.latest = "";
    svg.dataset.points = "0";
    return "";
  }
  const t0 = pts[0][0], t1 = Math.max(times[times.length - 1], t0 + 1);  // from its first sample
  const max = Math.max(...pts.map(([, v]) => v)) * 1.15 || 1;
  const xy = pts.map(([t, v]) => `${(pad + ((t - t0) / (t1 - t0)) * (w - 2 * pad)).toFixed(1)},${(h - pad - (v / max) * (h - 2 * pad)).toFixed(1)}`);
  svg.innerHTML = `<line x1="0" y1="${h - pad}" x2="${w}" y2="${h - pad}" class="axis"/>
    <text x="${w - 4}" y="12" text-anchor="end" class="label">${esc(fmt(max))}</text>
    <text x="4" y="12" class="label">last ${esc(age(new Date(t0 * 1000).toISOString()))}</text>
    <polyline points="${xy.join(" ")}" class="line"/>`;
  const latest = pts[pts.length - 1][1];
  svg.dataset.latest = String(latest);
  svg.dataset.max = String(Math.max(...pts.map(([, v]) => v)));
  svg.dataset.points = String(pts.length);
  return fmt(latest);
}

const live = {timer: null, logs: null, pod: null};

function stopLive() {
  if (live.timer) clearInterval(live.timer);
  if (live.logs) live.logs.abort();
  live.timer = live.logs = live.pod = null;
  $("#pod-live").hidden = true;
}

async function refreshCharts(ns, name) {
  try {
    const h = await api(`/dashboard/api/history/pods/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`);
    $("#cpu-now").textContent = drawChart($("#cpu-chart"), h.t, h.values[0] || [], cores);
    $("#mem-now").textContent = drawChart($("#mem-chart"), h.t, h.values[1] || [], bytes);
  } catch (e) { /* shown next time */ }
}

async function followLogs(ns, name, container) {
  if (live.logs) live.logs.abort();
  const ctrl = new AbortController();
  live.logs = ctrl;
  const pre = $("#logs");
  pre.textContent = "";
  const follow = $("#log-follow").checked;
  const url = `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}/log?` +
    `container=${encodeURIComponent(container)}&tailLines=500${follow ? "&follow=true" : ""}`;
  try {
    const res = await api(url, {signal: ctrl.signal, raw: true, headers: {Accept: "*/*"}});
    if (!res.ok) {
      const s = await res.json().catch(() => null);
      pre.textContent = (s && s.message) || `HTTP ${res.status}`;
      return;
    }
    const reader = res.body.getReader();
    const decoder = new TextDecoder();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 20;
      pre.append(decoder.decode(value, {stream: true}));
      if (pre.textContent.length > 400000) pre.textContent = pre.textContent.slice(-300000);
      if (atBottom) pre.scrollTop = pre.scrollHeight;
    }
  } catch (e) {
    if (ctrl.signal.aborted) return;
    // the browser drops streams when the host's network changes: follow again
    pre.append(`\n[log stream interrupted: ${e.message}; reconnecting]\n`);
    await new Promise((r) => setTimeout(r, 1000));
    if (live.logs === ctrl && follow) followLogs(ns, name, container);
  }
}

function startLive(ns, name) {
  if (live.pod === `${ns}/${name}`) return;
  stopLive();
  live.pod = `${ns}/${name}`;
  $("#pod-live").hidden = false;
  const pod = state.objects.pods.get(`${ns}/${name}`);
  const sel = $("#log-container");
  const names = pod ? (pod.spec.containers || []).map((c) => c.name) : [];
  sel.innerHTML = names.map((n) => `<option>${esc(n)}</option>`).join("");
  sel.onchange = () => followLogs(ns, name, sel.value);
  $("#log-follow").onchange = () => followLogs(ns, name, sel.value);
  if (names.length) followLogs(ns, name, names[0]);
  refreshCharts(ns, name);
  live.timer = setInterval(() => refreshCharts(ns, name), 5000);
}

// -- traffic and usage (latest samples) -------------------------------------------------------

async function refreshLatest() {
  try {
    const ns = state.namespace ? `?namespace=${encodeURIComponent(state.namespace)}` : "";
    const may = (kind) => !state.forbidden.includes(kind);  // no 403s every 5 s
    const [svc, node] = await Promise.all([
      may("services") ? api(`/dashboard/api/latest/services${ns}`).catch(() => ({})) : {},
      may("nodes") ? api("/dashboard/api/latest/nodes").catch(() => ({})) : {}]);
    state.latest.service = svc;
    state.latest.node = node;
    const page = route().page;
    if (page === "services" || page === "nodes") scheduleRender();
  } catch (e) { /* the next round */ }
}

// -- routing and rendering -----------------------------------------------------------------------

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  return {page: parts[0] || "overview", args: parts.slice(1)};
}

const PAGES = {overview: pageOverview, workloads: pageWorkloads, services: pageServices,
  nodes: pageNodes, namespaces: pageNamespaces};
let firstRender = true;

const renderTimes = [];
window.kybRenderTimes = renderTimes;  // milliseconds each render took (tests, benchmarks)

function render() {
  const started = lastRender = performance.now();
  if (!state.token) return;
  const {page, args} = route();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === page);
  const main = $("#page");
  if (!state.synced) {
    main.innerHTML = "<p class='muted'>loading…</p>";
    return;
  }
  const focused = document.activeElement && document.activeElement.id &&
    main.contains(document.activeElement) ? document.activeElement.id : null;
  let html;
  if (page === "pod" && args.length === 2) {
    html = pagePod(args[0], args[1]);
    startLive(args[0], args[1]);
  } else {
    stopLive();
    html = (PAGES[page] || pageOverview)();
  }
  if (state.forbidden.length) {
    html = `<p class="muted" id="forbidden">Not shown: this token may not list ${esc(state.forbidden.join(", "))}` +
      `${state.namespace ? "" : " in all namespaces (type a namespace at the top)"}.</p>` + html;
  }
  main.innerHTML = html;
  for (const [id, value] of typed) {
    const el = document.getElementById(id);
    if (el) el.value = value;
    else typed.delete(id);
  }
  if (focused) {
    const el = document.getElementById(focused);
    if (el) el.focus();
  }
  refreshNamespaces();
  if (firstRender) {
    firstRender = false;
    performance.mark("kyb-first-render");  // the page shows the cluster: the load time
  }
  renderTimes.push(performance.now() - started);
  if (renderTimes.length > 500) renderTimes.shift();
  document.body.dataset.rendered = String(Date.now());
}

function refreshNamespaces() {
  const list = $("#ns-options");
  const names = [...state.objects.namespaces.values()].map((n) => n.metadata.name).sort();
  const want = names.join(",");
  if (list.dataset.names === want) return;
  list.dataset.names = want;
  list.innerHTML = names.map((n) => `<option value="${esc(n)}">`).join("");
}

async function scale(form) {
  const replicas = parseInt(form.replicas.value, 10);
  typed.delete(form.replicas.id);  // from now on the field shows the cluster's value
  const path = `/apis/${form.dataset.scale.replace(/\/([^/]+)$/, "/namespaces/" + encodeURIComponent(form.dataset.ns) + "/$1")}/${encodeURIComponent(form.dataset.name)}/scale`;
  try {
    await api(path, {method: "PATCH", headers: {"Content-Type": "application/merge-patch+json"},
      body: JSON.stringify({spec: {replicas}})});
    showError("");
  } catch (e) {
    showError(`Scaling ${form.dataset.name} failed: ${e.message}`);
  }
}

function logout(message) {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  if (state.stream) state.stream.abort();
  stopLive();
  state.synced = false;
  showLogin(message || "");
}

function showLogin(message) {
  $("#login-view").hidden = false;
  $("#page").hidden = true;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  $("#ns-picker").hidden = true;
  $("#login-error").textContent = message;
}

let latestTimer = null;
setInterval(() => { if (state.synced && !document.hidden) scheduleRender(); }, 10000);  // ages
function showApp() {
  $("#login-view").hidden = true;
  $("#page").hidden = false;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  $("#ns-picker").hidden = false;
  render();
  openStream();
  if (latestTimer) clearInterval(latestTimer);
  refreshLatest();
  latestTimer = setInterval(refreshLatest, 5000);
}

async function login(token) {
  state.token = token;
  try {
    // who the token is (kubectl auth whoami's review): any valid token may ask
    const res = await fetch("/apis/authentication.k8s.io/v1/selfsubjectreviews", {
      method: "POST", body: JSON.stringify({apiVersion: "authentication.k8s.io/v1", kind: "SelfSubjectReview"}),
      headers: {Authorization: `Bearer ${token}`, "Content-Type": "application/json"}});
    if (res.status === 401) {
      state.token = "";
      showLogin("Unauthorized: the token was refused.");
      return;
    }
    const review = res.ok ? await res.json() : null;
    $("#whoami").textContent = ((review || {}).status || {}).userInfo ? review.status.userInfo.username : "";
  } catch (e) {
    showLogin(`Cannot reach the API server: ${e.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

document.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (ev.target.id === "login-form") login($("#token").value.trim());
  else if (ev.target.classList.contains("scale")) scale(ev.target);
});
$("#logout").addEventListener("click", () => logout(""));
$("#ns").addEventListener("change", (ev) => {
  // the stream follows the namespace: a token may be allowed in one namespace only
  const ns = ev.target.value.trim();
  if (ns === state.namespace) return;
  state.namespace = ns;
  render();  // what is known, filtered, until the new stream has the namespace's state
  openStream();
  refreshLatest();
});
// what the user typed survives re-renders (the page is rebuilt on every change)
const typed = new Map();
document.addEventListener("input", (ev) => {
  if (ev.target.id && $("#page").contains(ev.target)) typed.set(ev.target.id, ev.target.value);
});
window.addEventListener("hashchange", render);

if (state.token) login(state.token);
else showLogin("");
