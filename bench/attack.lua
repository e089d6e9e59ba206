-- wrk script for the attack scenario: every request claims a random client IP in
-- X-Forwarded-For (values only: all traffic goes to 127.0.0.1, the trusted proxy) and asks for
-- either a scanner probe path or a path the upstream answers 404 (/missing/...).
--
-- Environment: FLOOD_POOL (distinct client IPs, from 198.18.0.0/15; default 20000),
-- PROBE_SHARE (fraction of probe requests; default 0.2).
-- Status counts of all threads are printed by done() as "status <code> <count>" lines.

local pool = tonumber(os.getenv("FLOOD_POOL") or "20000")
local probe_share = tonumber(os.getenv("PROBE_SHARE") or "0.2")

local probes = {
  "/.env", "/.git/config", "/wp-login.php", "/xmlrpc.php", "/phpmyadmin/",
  "/.aws/credentials", "/vendor/phpunit/phpunit/src/Util/PHP/eval-stdin.php",
  "/wp-admin/setup-config.php", "/.env.production", "/boaform/admin/formLogin",
}

local threads = {}
local thread_id = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("id", thread_id)
  table.insert(threads, thread)
end

function init(args)
  math.randomseed(os.time() * 1000 + (id or 0))
  counts = {}
end

local function client_ip(i)
  -- 198.18.0.0/15 (benchmarking range, RFC 2544): 131072 addresses.
  return string.format("198.%d.%d.%d", 18 + math.floor(i / 65536), math.floor(i / 256) % 256, i % 256)
end

function request()
  local ip = client_ip(math.random(0, pool - 1))
  local path
  if math.random() < probe_share then
    path = probes[math.random(#probes)]
  else
    path = "/missing/" .. math.random(1, 1000000000)
  end
  return wrk.format("GET", path, { ["X-Forwarded-For"] = ip })
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k, v in pairs(c) do total[k] = (total[k] or 0) + v end
  end
  for k, v in pairs(total) do io.write(string.format("status %d %d\n", k, v)) end
end
