-- POST /chat/completions with a fixed small body; the key and model come from the environment.
-- done() prints one JSON line (marked WRK_JSON) that bench/wrk_bench.py reads.
wrk.method = "POST"
wrk.path = os.getenv("WRK_PATH") or "/v1/chat/completions"
wrk.headers["content-type"] = "application/json"
wrk.headers["authorization"] = "Bearer " .. (os.getenv("WRK_KEY") or "none")
-- Extra headers, one "name: value" a line (Portkey's provider and custom host).
for line in string.gmatch(os.getenv("WRK_HEADERS") or "", "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end
wrk.body = '{"model":"' .. (os.getenv("WRK_MODEL") or "gpt-4o-mini") .. '",'
  .. '"messages":[{"role":"user","content":"Summarise the ledger in one line."}],'
  .. '"max_tokens":32}'

ok = 0  -- globals: done() reads each thread's with thread:get
bad = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status == 200 then
    ok = ok + 1
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local answered, failed = 0, 0
  for _, t in ipairs(threads) do
    answered = answered + t:get("ok")
    failed = failed + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"ok":%d,"non200":%d,"socket_errors":%d,"duration_us":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, answered, failed, e.connect + e.read + e.write + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
