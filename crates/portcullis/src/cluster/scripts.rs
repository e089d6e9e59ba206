//! The Lua scripts: each one change made atomically in Redis, so two gateways counting the
//! same client at once never both ban it nor lose an offense.

use std::sync::OnceLock;

use redis::Script;

/// Counts an offense (`mode = "offense"`) or records a ban this gateway made first
/// (`mode = "ban"`), and bans cluster-wide when the score reaches `maxretry`.
///
/// KEYS: offenses, history, ban, offender index, ban index.
/// ARGV: mode, now, weight, findtime, maxretry, history, max_offenders, max_bans, node, kind,
/// client, net, channel, member, rnd, local ban count, local until, local reason, local score,
/// then the duration of the 1st, 2nd, ... ban (the last repeats).
///
/// Returns `{"counted", score}`, `{"refused_offender", ""}`, `{"refused_ban", ""}`,
/// `{"banned", ban}` or `{"banned_already", ban}` (the ban as JSON).
const OFFENSE: &str = r#"
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local existing = redis.call('GET', KEYS[3])
if existing then
  return {'banned_already', existing}
end
local score
if mode == 'offense' then
  local findtime = tonumber(ARGV[4])
  if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
    if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[7]) then
      return {'refused_offender', ''}
    end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - findtime)
  redis.call('ZADD', KEYS[1], now, ARGV[14] .. ':' .. ARGV[3])
  -- At most 32 offenses per client, as the local window keeps.
  local n = redis.call('ZCARD', KEYS[1])
  if n > 32 then
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, n - 33)
  end
  redis.call('PEXPIRE', KEYS[1], findtime)
  redis.call('ZADD', KEYS[4], now + findtime, ARGV[11])
  score = 0
  for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    score = score + tonumber(string.match(m, ':(%d+)$'))
  end
  if score < tonumber(ARGV[5]) then
    return {'counted', tostring(score)}
  end
else
  score = tonumber(ARGV[19])
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)
if redis.call('ZCARD', KEYS[5]) >= tonumber(ARGV[8]) then
  return {'refused_ban', ''}
end
local count = redis.call('INCR', KEYS[2])
local local_count = tonumber(ARGV[16])
if count < local_count then
  count = local_count
  redis.call('SET', KEYS[2], count)
end
local durations = #ARGV - 19
local until_ms = now + tonumber(ARGV[19 + math.min(count, durations)]) + tonumber(ARGV[15])
local reason
if mode == 'ban' then
  local local_until = tonumber(ARGV[17])
  if count <= local_count or local_until > until_ms then
    until_ms = local_until
  end
  reason = ARGV[18]
else
  reason = 'score ' .. string.format('%d', score) .. ' reached maxretry ' .. ARGV[5]
    .. ' within findtime ' .. string.format('%d', math.floor(tonumber(ARGV[4]) / 1000))
    .. 's on the cluster (last offense: ' .. ARGV[10] .. ')'
end
local ban = '{"net":' .. cjson.encode(ARGV[12]) .. ',"origin":"automatic","reason":'
  .. cjson.encode(reason) .. ',"trigger":' .. cjson.encode(ARGV[10])
  .. ',"score":' .. string.format('%d', score) .. ',"ban_count":' .. string.format('%d', count)
  .. ',"created_ms":' .. string.format('%d', now) .. ',"until_ms":' .. string.format('%d', until_ms) .. '}'
redis.call('SET', KEYS[3], ban, 'PX', string.format('%d', until_ms - now))
redis.call('PEXPIRE', KEYS[2], string.format('%d', until_ms - now + tonumber(ARGV[6])))
redis.call('ZADD', KEYS[5], string.format('%d', until_ms), ARGV[12])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[4], ARGV[11])
redis.call('PUBLISH', ARGV[13], '{"node":' .. cjson.encode(ARGV[9]) .. ',"at_ms":'
  .. string.format('%d', now) .. ',"ban":' .. ban .. '}')
return {'banned', ban}
"#;

/// Stores a ban made here (an administrator's, or any local ban written back at
/// reconnection with `nx = "1"`: only when Redis does not have it) and publishes it.
///
/// KEYS: ban, ban index, history.
/// ARGV: ban JSON, ttl ms ("0" = forever), index score, now, max_bans, net, channel, message,
/// nx, ban count (0 = no history to keep), history.
///
/// Returns "stored", "exists" or "refused" (cap).
const PUT: &str = r#"
local exists = redis.call('EXISTS', KEYS[1]) == 1
if ARGV[9] == '1' and exists then
  return 'exists'
end
if not exists then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
  if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[5]) then
    return 'refused'
  end
end
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  local count = tonumber(ARGV[10])
  if count > 0 and tonumber(redis.call('GET', KEYS[3]) or '0') < count then
    redis.call('SET', KEYS[3], count, 'PX', string.format('%d', tonumber(ARGV[2]) + tonumber(ARGV[11])))
  end
end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[6])
redis.call('PUBLISH', ARGV[7], ARGV[8])
return 'stored'
"#;

/// Lifts a ban and forgets the client's offense window, and publishes it.
///
/// KEYS: ban, ban index, offenses, offender index.
/// ARGV: net, client ("" for a network), channel, message.
const UNBAN: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[2] ~= '' then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[4], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#;

/// nginx's `limit_req` for `shared = true` zones, on Redis's clock so every gateway drains
/// the same bucket alike: the same arithmetic as `portcullis_policy::limiter` (excess in
/// milli-requests, `excess - rate * ms / 1000 + 1000`), several zones all or none. A bucket
/// expires once drained (then it is what a new client's would be); a zone tracks at most
/// `max_clients` clients, beyond which a new one is not counted here (`"full"`: the gateway's
/// own count decides).
///
/// KEYS: the client's bucket in each zone, then each zone's index.
/// ARGV: the number of zones, the client, then per zone: rate (milli-requests per second),
/// burst (milli-requests), delay threshold (milli-requests; -1 = nodelay), max_clients.
///
/// Returns `{"pass", delay_ms, 0}`, `{"reject", zone, retry_after_ms}` or `{"full", zone, 0}`
/// (`zone` counts from 0).
const LIMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = tonumber(ARGV[1])
local seen = {}
for i = 1, n do
  local rate = tonumber(ARGV[(i - 1) * 4 + 3])
  local burst = tonumber(ARGV[(i - 1) * 4 + 4])
  local stored = redis.call('HMGET', KEYS[i], 'e', 'l')
  if stored[1] then
    local excess = tonumber(stored[1])
    local last = tonumber(stored[2])
    local ms = math.max(now - last, 0)
    local next = math.max(excess + 1000 - math.floor(rate * ms / 1000), 0)
    if next > burst then
      local wait = last + math.ceil((excess + 1000 - burst) * 1000 / rate) - now
      return {'reject', i - 1, math.max(wait, 1)}
    end
    -- nginx keeps `last` when no time passed, so sub-millisecond drains are not lost.
    if ms == 0 then seen[i] = {next, last} else seen[i] = {next, now} end
  else
    redis.call('ZREMRANGEBYSCORE', KEYS[n + i], '-inf', now)
    if redis.call('ZCARD', KEYS[n + i]) >= tonumber(ARGV[(i - 1) * 4 + 6]) then
      return {'full', i - 1, 0}
    end
    seen[i] = {0, now}
  end
end
local delay = 0
for i = 1, n do
  local rate = tonumber(ARGV[(i - 1) * 4 + 3])
  local threshold = tonumber(ARGV[(i - 1) * 4 + 5])
  local excess = seen[i][1]
  redis.call('HSET', KEYS[i], 'e', string.format('%d', excess), 'l', string.format('%d', seen[i][2]))
  local ttl = math.ceil((excess + 1000) * 1000 / rate)
  redis.call('PEXPIRE', KEYS[i], string.format('%d', ttl))
  redis.call('ZADD', KEYS[n + i], string.format('%d', now + ttl), ARGV[2])
  if threshold >= 0 and excess > threshold then
    delay = math.max(delay, math.floor((excess - threshold) * 1000 / rate))
  end
end
return {'pass', delay, 0}
"#;

/// The offense script (loaded once, called by its SHA1).
pub fn offense() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(OFFENSE))
}

/// The put script.
pub fn put() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(PUT))
}

/// The unban script.
pub fn unban() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(UNBAN))
}

/// The shared rate-limit script.
pub fn limit() -> &'static Script {
    static S: OnceLock<Script> = OnceLock::new();
    S.get_or_init(|| Script::new(LIMIT))
}
