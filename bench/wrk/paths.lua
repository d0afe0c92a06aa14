-- wrk script: GET requests cycling through the paths listed (one a line) in
-- the file named by the WRK_PATHS environment variable; done() prints one
-- JSON object with the request rate and latency percentiles (microseconds).
-- WRK_HEADER, when set ("Name: value"), is sent with every request.
local paths = {}
local header = os.getenv("WRK_HEADER")
if header and #header > 0 then
  local name, value = header:match("^([^:]+):%s*(.*)$")
  wrk.headers[name] = value
end
for line in io.lines(os.getenv("WRK_PATHS")) do
  if #line > 0 then
    paths[#paths + 1] = line
  end
end
local i = 0

function init(args)
  -- each thread starts at a different place in the list
  i = math.random(#paths) - 1
end

function request()
  i = i % #paths + 1
  return wrk.format("GET", paths[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "rps": %.1f, "errors": %d, "non2xx": %d, ' ..
    '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "p999_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    e.connect + e.read + e.write + e.timeout, e.status,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
