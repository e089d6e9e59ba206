-- wrk script for the memory run: request i claims client 10.x.y.z = i (mod MEM_CLIENTS) in
-- X-Forwarded-For and asks for /missing/i (the upstream answers 404: one offense each), so every
-- client gets a rate-limit entry and an offender entry. Stops once MEM_CLIENTS answers arrived.

local clients = tonumber(os.getenv("MEM_CLIENTS") or "1000000")
local sent, answered = 0, 0

function request()
  local i = sent % clients
  sent = sent + 1
  local ip = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  return wrk.format("GET", "/missing/" .. i, { ["X-Forwarded-For"] = ip })
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= clients then
    wrk.thread:stop()
  end
end
