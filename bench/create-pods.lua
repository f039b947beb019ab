-- wrk script: POST the pod in file BODY (with metadata.generateName) COUNT times in all
-- into namespace NS, then stop. One thread (-t1) is assumed.
local ns = os.getenv("NS") or "default"
local token = os.getenv("TOKEN") or ""
local limit = tonumber(os.getenv("COUNT") or "1000")
local f = assert(io.open(os.getenv("BODY"), "r"))
local body = f:read("*a")
f:close()
local sent = 0
local received = 0
local statuses = {}
request = function()
  sent = sent + 1
  return wrk.format("POST", "/api/v1/namespaces/" .. ns .. "/pods",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
response = function(status, headers, body)
  received = received + 1
  statuses[status] = (statuses[status] or 0) + 1
  if received >= limit then
    wrk.thread:stop()
  end
end
done = function(summary, latency, requests)
  io.write(string.format("requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f errors_status=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
