-- wrk script: POST one request body over and over, then print one RESULT line.
--   BODY_FILE      the body (JSON, or the binary tensor extension's header + tensors)
--   CONTENT_TYPE   default application/json
--   HEADER_LENGTH  when set, sent as Inference-Header-Content-Length (binary extension)
--   PAUSE_MS       when above 0, each connection waits that long (whole ms) after an answer
--                  before its next request: a load held below the server's capacity
-- Latencies are printed in microseconds: the 1-connection targets are sub-millisecond.
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local header_length = os.getenv("HEADER_LENGTH")
if header_length ~= nil and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end

local pause_ms = tonumber(os.getenv("PAUSE_MS") or "") or 0
if pause_ms > 0 then
  delay = function() return pause_ms end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d rps=%.1f p50_us=%d p90_us=%d p99_us=%d max_us=%d "
      .. "errors=%d non2xx=%d\n",
    summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect + e.read + e.write + e.timeout, e.status))
end
