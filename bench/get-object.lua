-- wrk script: GET one object (path in env OBJ) with the bearer token in env TOKEN.
local token = os.getenv("TOKEN") or ""
local path = os.getenv("OBJ") or "/api/v1/namespaces/default/configmaps/bench-get"
request = function()
  return wrk.format("GET", path, {["Authorization"] = "Bearer " .. token})
end
done = function(summary, latency, requests)
  io.write(string.format("requests=%d rps=%.1f p50_ms=%.2f p99_ms=%.2f errors_status=%d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status))
end
