-- wrk script: thread i steps env i of GYMSERVE_IDS (comma-separated) in a closed loop on its one
-- keep-alive connection. GYMSERVE_PATH is the step path with %s for the id; the body comes from
-- GYMSERVE_BODY_FILE (binary-safe), sent with GYMSERVE_CONTENT_TYPE and GYMSERVE_ACCEPT.
-- Run with -tN -cN (one connection per thread). Prints a JSON summary line.
local threads = {}
local next_index = 1

function setup(thread)
  thread:set("index", next_index)
  next_index = next_index + 1
  table.insert(threads, thread)
end

function init(args)
  local ids = {}
  for id in string.gmatch(os.getenv("GYMSERVE_IDS"), "[^,]+") do
    table.insert(ids, id)
  end
  local file = io.open(os.getenv("GYMSERVE_BODY_FILE"), "rb")
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.path = string.format(os.getenv("GYMSERVE_PATH"), ids[(index - 1) % #ids + 1])
  wrk.headers["Content-Type"] = os.getenv("GYMSERVE_CONTENT_TYPE")
  wrk.headers["Accept"] = os.getenv("GYMSERVE_ACCEPT")
  errors, bytes = 0, 0
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
  end
end

function done(summary, latency, requests)
  local errs = 0
  for _, thread in ipairs(threads) do
    errs = errs + thread:get("errors")
  end
  io.write(string.format('{"requests": %d, "seconds": %f, "errors": %d, "socket_errors": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d}\n', summary.requests, summary.duration / 1e6, errs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout + summary.errors.status,
    summary.bytes, latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
