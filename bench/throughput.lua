-- wrk script for bench/throughput.sh: POST /v1/emails with a fixed body mix, stopping each
-- thread after its share of requests. Bodies come from files written by the shell script:
-- BENCH_BODY_PLAIN (2 KB, one recipient), BENCH_BODY_MULTI (three recipients),
-- BENCH_BODY_ATTACH (with an attachment); BENCH_MIX=plain sends only the first.

local function read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("*a")
  f:close()
  return s
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  plain = read(os.getenv("BENCH_BODY_PLAIN"))
  multi = read(os.getenv("BENCH_BODY_MULTI"))
  attach = read(os.getenv("BENCH_BODY_ATTACH"))
  mix = os.getenv("BENCH_MIX") ~= "plain"
  limit = tonumber(os.getenv("BENCH_PER_THREAD"))
  headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY"),
  }
  issued = 0
  answered = 0
  failed = 0
end

function request()
  issued = issued + 1
  local body = plain
  if mix then
    local i = issued % 20
    if i == 0 then
      body = multi
    elseif i == 1 then
      body = attach
    end
  end
  return wrk.format("POST", "/v1/emails", headers, body)
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 202 then
    failed = failed + 1
  end
  if answered >= limit then
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local total_failed = 0
  for _, t in ipairs(threads) do
    total_failed = total_failed + (t:get("failed") or 0)
  end
  io.write(string.format("BENCH requests=%d non202=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d\n",
    summary.requests, total_failed, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max))
end
