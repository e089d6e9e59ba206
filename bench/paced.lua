-- wrk script for a fixed offered rate: each connection waits CONNS/RATE seconds between
-- requests, so the whole run offers about RATE req/s (slightly less: the response time is
-- added to each gap). The CPU figures are normalized by the requests actually completed.
--
-- Environment: RATE (req/s, default 2000), CONNS (must equal wrk's -c, default 20).

local rate = tonumber(os.getenv("RATE") or "2000")
local conns = tonumber(os.getenv("CONNS") or "20")
local gap_ms = 1000 * conns / rate

function delay()
  return gap_ms
end
