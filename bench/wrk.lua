-- wrk script of the load scenario (bench/scenarios/load.py).
--
-- Arguments (after `--`): bearer token, requests per connection,
-- connections, threads. Adds the Authorization header and counts answers
-- that are not 2xx. Each thread stops once its connections have had their
-- share of answers (so every client makes about `per_connection`
-- requests) and prints "BENCH_THREAD_DONE"; wrk itself runs until its -d
-- duration, so the harness sends it SIGINT once every thread is done, and
-- wrk's summary then covers the real run. At the end it prints one line,
-- "BENCH_JSON {...}", for the harness to parse.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  local per_connection = tonumber(args[2])
  local connections = tonumber(args[3])
  local nthreads = tonumber(args[4])
  limit = per_connection * connections / nthreads
  responses = 0
  non2xx = 0
  codes = {}  -- non-2xx answers by status code
end

function response(status, headers, body)
  responses = responses + 1
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    codes[status] = (codes[status] or 0) + 1
  end
  if responses == limit then
    io.write("BENCH_THREAD_DONE\n")
    io.stdout:flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local non2xx_total, responses_total, code_totals = 0, 0, {}
  for _, thread in ipairs(threads) do
    non2xx_total = non2xx_total + thread:get("non2xx")
    responses_total = responses_total + thread:get("responses")
    for code, count in pairs(thread:get("codes")) do
      code_totals[code] = (code_totals[code] or 0) + count
    end
  end
  local by_code = {}
  for code, count in pairs(code_totals) do
    table.insert(by_code, string.format('"%d": %d', code, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "responses": %d, "non2xx": %d, '
      .. '"connect_errors": %d, "read_errors": %d, "write_errors": %d, '
      .. '"status_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d, '
      .. '"max_us": %d, "mean_us": %.1f, "non2xx_by_code": {%s}}\n',
    summary.requests, summary.duration, responses_total, non2xx_total,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, latency.mean,
    table.concat(by_code, ", ")
  ))
end
