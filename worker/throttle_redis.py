"""The throttle's state in Redis, shared by every worker process on every host.

One Lua script per operation keeps each atomic; the clock is Redis' own TIME, so hosts
with skewed clocks still agree. The state of a model is one hash: the arrival times, the
fleet's factor (``factor``, ``pat``: when it was last lowered), the pause, and the rings of
calls (``s<i>`` = ``bucket:calls:tokens``) and 429s (``t<i>`` = ``bucket:count``) by slot.
Its TTL outlives every time it holds, so an idle model leaves nothing behind (and starts
again at its ceilings). The scripts are the same arithmetic as ``worker/gcra.py``, line for
line (tests run both backends).
"""

from __future__ import annotations

from string import Template
from typing import Any

import redis

from qocr.worker import gcra
from qocr.worker.gcra import Decrease, GcraState, Grant, Window
from qocr.worker.throttle import FleetRate, Limits, Throttle

PREFIX = "qocr:throttle:"

_CONSTANTS = {
    "BUCKET": gcra.BUCKET_SECONDS,
    "RING": gcra.RING_BUCKETS,
    "WINDOW_BUCKETS": round(gcra.WINDOW_SECONDS / gcra.BUCKET_SECONDS),
    "MIN_SPAN": gcra.MIN_SPAN_SECONDS,
    "MIN_STEP": gcra.MIN_STEP,
    "COOLDOWN": gcra.DECREASE_COOLDOWN_SECONDS,
    "MIN_FACTOR": gcra.MIN_FACTOR,
    "HOLD": gcra.HOLD_SECONDS,
    "PROBE": gcra.PROBE_PER_SECOND,
    "HEADROOM": gcra.HEADROOM,
    "LEAD": gcra.LEAD_SECONDS,
    "IDLE": gcra.IDLE_SECONDS,
    "START_SLOWDOWN": gcra.START_SLOWDOWN,
    "START_SECONDS": gcra.START_SECONDS,
    "RING_SECONDS": gcra.RING_BUCKETS * gcra.BUCKET_SECONDS,
}

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'rtat', 'ttat', 'factor', 'pat', 'pause', 'start')
local rtat = tonumber(s[1] or '0')
local ttat = tonumber(s[2] or '0')
local factor = tonumber(s[3] or '1')
local pat = tonumber(s[4] or '0')
local pause = tonumber(s[5] or '0')
local started = tonumber(s[6] or '0')
local function fmt(x)
  return string.format('%.6f', x)
end
local function current_factor()
  if factor >= 1 then
    return 1
  end
  return math.min(1, factor + $PROBE * math.max(0, now - pat - $HOLD))
end
local function bucket_of(x)
  return math.floor(x / $BUCKET)
end
local function count_sent(slot, calls, tokens)
  local b = bucket_of(slot)
  local f = 's' .. string.format('%d', b % $RING)
  local held = redis.call('HGET', KEYS[1], f)
  if held then
    local hb, hc, ht = string.match(held, '^(%-?%d+):(%-?%d+):(%-?%d+)$$')
    if tonumber(hb) == b then
      calls = calls + tonumber(hc)
      tokens = tokens + tonumber(ht)
    end
  end
  redis.call('HSET', KEYS[1], f, string.format('%d:%d:%d', b, calls, tokens))
end
local function save()
  redis.call('HSET', KEYS[1], 'rtat', fmt(rtat), 'ttat', fmt(ttat), 'factor', fmt(factor),
             'pat', fmt(pat), 'pause', fmt(pause), 'start', fmt(started))
  local climb = pat + $HOLD + (1 - math.min(1, factor)) / $PROBE
  local horizon = math.max(rtat, ttat, pause, climb) - now + $RING_SECONDS
  redis.call('EXPIRE', KEYS[1], math.max(math.ceil($RING_SECONDS), math.ceil(horizon)))
end
"""

_RESERVE = (
    _PRELUDE
    + """
local request_interval = tonumber(ARGV[1])
local token_interval = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local current = current_factor()
local lead = 0
if math.max(pause, rtat, ttat) > now then
  lead = math.min($LEAD, request_interval / current)
end
local start = math.max(now + lead, pause, rtat, ttat)
local wait = start - now
if wait > max_wait then
  return {0, fmt(wait), fmt(0), fmt(current), 0}
end
if math.max(rtat, ttat) < now - $IDLE then
  started = start
end
local slow = 1 + $START_SLOWDOWN * math.max(0, 1 - (start - started) / $START_SECONDS)
rtat = start + request_interval * slow / current
if token_interval > 0 then
  ttat = start + tokens * token_interval * slow / current
end
count_sent(start, 1, tokens)
local recovered = 0
if factor < 1 and current >= 1 then
  factor = 1
  recovered = 1
end
save()
return {1, fmt(wait), fmt(start), fmt(current), recovered}
"""
)

_SETTLE = (
    _PRELUDE
    + """
local token_interval = tonumber(ARGV[1])
local extra = tonumber(ARGV[2])
local slot = tonumber(ARGV[3])
if token_interval > 0 and extra ~= 0 then
  ttat = math.max(now, ttat + extra * token_interval / current_factor())
  count_sent(slot, 0, extra)
  save()
end
return 1
"""
)

_PENALIZE = (
    _PRELUDE
    + """
local retry_after = tonumber(ARGV[1])
local slot = tonumber(ARGV[2])
local request_interval = tonumber(ARGV[3])
local token_interval = tonumber(ARGV[4])
if retry_after > 0 then
  pause = math.max(pause, now + retry_after)
end
if slot < 0 then
  save()
  return {0}
end
local b = bucket_of(slot)
local tf = 't' .. string.format('%d', b % $RING)
local held = redis.call('HGET', KEYS[1], tf)
local count = 1
if held then
  local hb, hc = string.match(held, '^(%-?%d+):(%-?%d+)$$')
  if tonumber(hb) == b then
    count = tonumber(hc) + 1
  end
end
redis.call('HSET', KEYS[1], tf, string.format('%d:%d', b, count))
local last = b - 1
local first = last + 1 - $WINDOW_BUCKETS
local fields = {}
for i = first, last do
  fields[#fields + 1] = 's' .. string.format('%d', i % $RING)
  fields[#fields + 1] = 't' .. string.format('%d', i % $RING)
end
local values = redis.call('HMGET', KEYS[1], unpack(fields))
local calls, tokens, throttled, earliest = 0, 0, 0, nil
local k = 1
for i = first, last do
  local sv, tv = values[k], values[k + 1]
  k = k + 2
  if sv then
    local hb, hc, ht = string.match(sv, '^(%-?%d+):(%-?%d+):(%-?%d+)$$')
    if tonumber(hb) == i and tonumber(hc) > 0 then
      calls = calls + tonumber(hc)
      tokens = tokens + tonumber(ht)
      if earliest == nil then
        earliest = i
      end
    end
  end
  if tv then
    local hb, hc = string.match(tv, '^(%-?%d+):(%-?%d+)$$')
    if tonumber(hb) == i then
      throttled = throttled + tonumber(hc)
    end
  end
end
local span = 0
if earliest ~= nil then
  span = (last + 1 - earliest) * $BUCKET
end
if calls == 0 or throttled == 0 or span < $MIN_SPAN then
  save()
  return {0}
end
local share_429 = math.min(1, throttled / calls)
local accepted = math.max((calls - throttled) * request_interval, tokens * token_interval) / span
local target = math.max($MIN_FACTOR, accepted * $HEADROOM)
local before = current_factor()
if target > before * (1 - $MIN_STEP) or now - pat < $COOLDOWN then
  save()
  return {0}
end
factor = target
pat = now
save()
return {1, fmt(before), fmt(target), fmt(share_429)}
"""
)


def _script(template: str) -> str:
    return Template(template).substitute({name: repr(value) for name, value in _CONSTANTS.items()})


class RedisBackend:
    """GCRA state in one Redis hash per model, under ``prefix``."""

    def __init__(self, client: redis.Redis[Any], prefix: str = PREFIX) -> None:
        self._client = client
        self._prefix = prefix
        self._reserve: Any = client.register_script(_script(_RESERVE))
        self._settle: Any = client.register_script(_script(_SETTLE))
        self._penalize: Any = client.register_script(_script(_PENALIZE))

    def _key(self, model: str) -> list[str]:
        return [self._prefix + model]

    def reserve(
        self,
        model: str,
        request_interval: float,
        token_interval: float,
        tokens: int,
        max_wait: float,
    ) -> Grant:
        granted, wait, slot, factor, recovered = self._reserve(
            keys=self._key(model), args=[request_interval, token_interval, tokens, max_wait]
        )
        return Grant(
            granted=bool(int(granted)),
            wait=float(wait),
            slot=float(slot),
            factor=float(factor),
            recovered=bool(int(recovered)),
        )

    def settle(
        self, model: str, token_interval: float, estimated: int, actual: int, slot: float
    ) -> None:
        self._settle(keys=self._key(model), args=[token_interval, actual - estimated, slot])

    def penalize(
        self,
        model: str,
        retry_after: float | None,
        slot: float | None,
        request_interval: float,
        token_interval: float,
    ) -> Decrease | None:
        answer = self._penalize(
            keys=self._key(model),
            args=[retry_after or 0, -1 if slot is None else slot, request_interval, token_interval],
        )
        if not int(answer[0]):
            return None
        before, after, share = (float(v) for v in answer[1:])
        return Decrease(before=before, after=after, share_429=share)

    def recent(self, model: str, seconds: float) -> tuple[float, Window]:
        now = self._now()
        state = read_state(self._client.hgetall(self._prefix + model))
        return gcra.current_factor(state, now), gcra.recent(state, now, seconds)

    def _now(self) -> float:
        seconds, micros = self._client.time()
        return float(seconds) + float(micros) / 1e6


def read_state(raw: dict[Any, Any]) -> GcraState:
    """A model's hash (``HGETALL``) as the pure state of :mod:`worker.gcra`."""
    fields = {_text(k): _text(v) for k, v in raw.items()}
    state = GcraState(
        request_tat=float(fields.get("rtat", 0)),
        token_tat=float(fields.get("ttat", 0)),
        factor=float(fields.get("factor", 1)),
        penalized_at=float(fields.get("pat", 0)),
        paused_until=float(fields.get("pause", 0)),
        started_at=float(fields.get("start", 0)),
    )
    for name, value in fields.items():
        if name[:1] == "s" and name[1:].isdigit():
            bucket, calls, tokens = (int(part) for part in value.split(":"))
            state.sent[int(name[1:])] = (bucket, calls, tokens)
        elif name[:1] == "t" and name[1:].isdigit():
            bucket, count = (int(part) for part in value.split(":"))
            state.throttled[int(name[1:])] = (bucket, count)
    return state


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def fleet_rate(redis_url: str, model: str, rpm: int | None, tpm: int | None) -> FleetRate | None:
    """The rate the fleet uses for ``model`` now (``qocr status``); None when Redis does not
    answer within a second."""
    client: redis.Redis[Any] = redis.Redis.from_url(
        redis_url, socket_connect_timeout=1, socket_timeout=1
    )
    try:
        throttle = Throttle(RedisBackend(client), max_wait=0)
        return throttle.fleet_rate(model, Limits.for_model(model, rpm, tpm))
    except redis.RedisError:
        return None
    finally:
        client.close()
