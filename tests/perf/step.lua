-- wrk script: every connection is one client that creates its own CartPole env, resets it and then
-- steps it in a closed loop, all on that connection (GYMSERVE_FRESH=1: a new connection per request).
-- Run with as many threads as connections (-tN -cN). Prints steps, errors and forwarded share as JSON.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  stage, base, errors, forwarded, steps = "create", nil, 0, 0, 0
  wrk.headers["Content-Type"] = "application/json"
  if os.getenv("GYMSERVE_FRESH") == "1" then
    wrk.headers["Connection"] = "close"
  end
end

function request()
  if stage == "create" then
    return wrk.format("POST", "/v1/envs/", nil, '{"env_id": "CartPole-v1", "auto_reset": true}')
  elseif stage == "reset" then
    return wrk.format("POST", base .. "reset/", nil, '{"seed": 0}')
  end
  return wrk.format("POST", base .. "step/", nil, '{"action": 0}')
end

function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    return
  end
  if stage == "create" then
    base = "/v1/envs/" .. string.match(body, '"instance_id":"([^"]+)"') .. "/"
    stage = "reset"
  elseif stage == "reset" then
    stage = "step"
  else
    steps = steps + 1
    if headers["X-Gymserve-Forwarded"] then
      forwarded = forwarded + 1
    end
  end
end

function done(summary, latency, requests)
  local errs, fwd, n = 0, 0, 0
  for _, thread in ipairs(threads) do
    errs = errs + thread:get("errors")
    fwd = fwd + thread:get("forwarded")
    n = n + thread:get("steps")
  end
  io.write(string.format('{"steps": %d, "seconds": %f, "errors": %d, "socket_errors": %d, "forwarded": %d, ' ..
    '"p50_us": %d, "p99_us": %d}\n', n, summary.duration / 1e6, errs,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    fwd, latency:percentile(50), latency:percentile(99)))
end
