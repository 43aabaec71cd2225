-- wrk script of the fixed-rate rows (bench/wrk.py): pre-signed webhooks,
-- one per line of a file (signature, a tab, the compact body), each posted
-- once, on a fixed schedule of `rate` posts a second.
--
-- Usage: wrk -t1 -c N -d S -s bench/wrk_rate.lua URL -- FILE RATE
--
-- Each connection reserves the next slot of the schedule before its post
-- and waits for it; a connection that is free only after its slot has
-- passed posts at once and counts as `late` (more than 10 ms behind): the
-- server, or the generator, could not keep up. wrk times each post from
-- the moment it is written, so a run with late posts understates the
-- latency: read `late` next to the percentiles.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
]]
local clock = ffi.new("bench_timespec")
local CLOCK_MONOTONIC = 1

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock)
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

-- Main state: the threads, to read their counters at the end.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

-- Thread state.
local posts = {}
local count, rate = 0, 0
local reserved, next_post, start = 0, 0, nil
answered, late, statuses, active_ms = 0, 0, {}, 0

function init(args)
  rate = tonumber(args[2])
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    count = count + 1
    posts[count] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      ["X-Hub-Signature-256"] = line:sub(1, tab - 1),
    }, line:sub(tab + 1))
  end
end

function delay()
  local now = now_ms()
  start = start or now
  if reserved >= count then
    return 3600 * 1000 -- every post is out: idle until the thread stops
  end
  local due = start + reserved * 1000 / rate
  reserved = reserved + 1
  if now - due > 10 then
    late = late + 1
  end
  return math.max(0, math.floor(due - now + 0.5))
end

function request()
  if start == nil then
    -- wrk calls this once before the run to check the request: that
    -- one is never sent, so it must not use up a body.
    return posts[1]
  end
  next_post = next_post + 1
  return posts[next_post]
end

function response(status, headers, body)
  answered = answered + 1
  statuses[status] = (statuses[status] or 0) + 1
  if answered >= count then
    -- wrk's main thread sleeps out -d whatever its threads do: tell
    -- bench/wrk.py, which interrupts it (wrk then reports at once).
    active_ms = now_ms() - start
    io.write("WRK-ANSWERED\n")
    io.flush()
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local answered_all, late_all, counts, active = 0, 0, {}, 0
  for _, thread in ipairs(threads) do
    active = math.max(active, thread:get("active_ms"))
    answered_all = answered_all + thread:get("answered")
    late_all = late_all + thread:get("late")
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s": %d', status, n))
  end
  local errors = summary.errors
  io.write(string.format(
    'WRK {"answered": %d, "late": %d, "statuses": {%s}, "duration_us": %d, '
      .. '"active_ms": %.1f, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "timeout": %d}}\n',
    answered_all, late_all, table.concat(parts, ", "), summary.duration, active,
    latency:percentile(50), latency:percentile(99), latency.max,
    errors.connect, errors.read, errors.write, errors.timeout
  ))
end
