"""The throttle's state in Redis, shared by every worker process on every host.

One Lua script per operation keeps each atomic; the clock is Redis' own TIME, so hosts
with skewed clocks still agree. Every key has a TTL, so an idle model leaves nothing behind.
The script is the same arithmetic as ``worker/gcra.py`` (tests run both backends).
"""

from __future__ import annotations

from typing import Any

import redis

from qocr.worker.gcra import MIN_FACTOR, PENALTY, PENALTY_COOLDOWN_SECONDS, RECOVERY_SECONDS, Grant

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'rtat', 'ttat', 'factor', 'pat', 'pause')
local rtat = tonumber(s[1] or '0')
local ttat = tonumber(s[2] or '0')
local factor = tonumber(s[3] or '1')
local pat = tonumber(s[4] or '0')
local pause = tonumber(s[5] or '0')
local current = factor
if factor < 1 then
  current = math.min(1, factor + (1 - factor) * (now - pat) / RECOVERY)
end
local function save()
  redis.call('HSET', KEYS[1], 'rtat', tostring(rtat), 'ttat', tostring(ttat),
             'factor', tostring(factor), 'pat', tostring(pat), 'pause', tostring(pause))
  local horizon = math.max(rtat, ttat, pause, pat + RECOVERY) - now + 60
  redis.call('EXPIRE', KEYS[1], math.max(60, math.ceil(horizon)))
end
""".replace("RECOVERY", repr(RECOVERY_SECONDS))

_RESERVE = (
    _PRELUDE
    + """
local request_interval = tonumber(ARGV[1])
local token_interval = tonumber(ARGV[2])
local tokens = tonumber(ARGV[3])
local max_wait = tonumber(ARGV[4])
local start = math.max(now, pause, rtat, ttat)
local wait = start - now
if wait > max_wait then
  return {0, tostring(wait)}
end
rtat = start + request_interval / current
if token_interval > 0 then
  ttat = start + tokens * token_interval / current
end
save()
return {1, tostring(wait)}
"""
)

_SETTLE = (
    _PRELUDE
    + """
local extra = tonumber(ARGV[1])
if extra > 0 then
  ttat = ttat + extra * tonumber(ARGV[2])
  save()
end
return 1
"""
)

_PENALIZE = (
    _PRELUDE
    + f"""
if now - pat >= {PENALTY_COOLDOWN_SECONDS!r} then
  factor = math.max({MIN_FACTOR!r}, current * {PENALTY!r})
  pat = now
end
local retry_after = tonumber(ARGV[1])
if retry_after > 0 then
  pause = math.max(pause, now + retry_after)
end
save()
return 1
"""
)


class RedisBackend:
    """GCRA state in one Redis hash per model, under ``prefix``."""

    def __init__(self, client: redis.Redis[Any], prefix: str = "qocr:throttle:") -> None:
        self._client = client
        self._prefix = prefix
        self._reserve: Any = client.register_script(_RESERVE)
        self._settle: Any = client.register_script(_SETTLE)
        self._penalize: Any = client.register_script(_PENALIZE)

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
        granted, wait = self._reserve(
            keys=self._key(model), args=[request_interval, token_interval, tokens, max_wait]
        )
        return Grant(granted=bool(int(granted)), wait=float(wait))

    def settle(self, model: str, token_interval: float, estimated: int, actual: int) -> None:
        self._settle(keys=self._key(model), args=[actual - estimated, token_interval])

    def penalize(self, model: str, retry_after: float | None) -> None:
        self._penalize(keys=self._key(model), args=[retry_after or 0])
