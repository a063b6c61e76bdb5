"""The budget shared across hosts: Redis (``redis://[:password@]host:port/db``).

Keys, per POLYV API host ``<host:port>``, under ``polyv-connector:budget:<host:port>:``:
``bucket`` (pyrate-limiter's GCRA state, stepped by the library's own Lua script), ``block``
(the block's end, expiring with it), ``runs`` (the set of run ids) and ``run:<id>`` (each run's
registration, expiring ``ttl`` after its last heartbeat, on Redis's clock).

The block and the bucket are checked in one script, one round trip per ``acquire()``: the
library's GCRA Lua script with a block check in front.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import SplitResult, unquote

import redis
from pyrate_limiter import Rate
from pyrate_limiter.abstracts.algorithm import ADMITTED, Decision

from polyv_connector.budget.base import ALGORITHM, BudgetStore, RunInfo
from polyv_connector.errors import ConfigError, DependencyUnavailable

KEY_PREFIX = "polyv-connector:budget:"

# Keep the later end when two runs record a block; expire the key with the block (relative
# PX, so the Redis server's clock does not need to agree with ours).
_SET_BLOCK_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local wanted = tonumber(ARGV[1])
if current >= wanted then return tostring(current) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"""


_BLOCKED = -2
# Prepended to the library's GCRA script (unchanged; it reads KEYS[1] and ARGV only): the block
# and the bucket in one round trip, and nothing taken from the bucket while blocked.
# The time is Redis's own (TIME, in ms, replacing the caller's ARGV[1]): runs on hosts whose
# clocks disagree still share one consistent bucket.
_BLOCK_CHECK_LUA = """
local polyv_time = redis.call('TIME')
ARGV[1] = string.format('%d', tonumber(polyv_time[1]) * 1000 + math.floor(tonumber(polyv_time[2]) / 1000))
local polyv_block = redis.call('GET', KEYS[2])
if polyv_block and tonumber(polyv_block) * 1000 > tonumber(ARGV[1]) then
    return {-2, polyv_block}
end
"""


def redacted(parts: SplitResult) -> str:
    """The URL without its password (or user): safe for logs, reprs, errors and status."""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    auth = "***@" if parts.password or parts.username else ""
    return f"{parts.scheme}://{auth}{host}{port}{parts.path}"


class RedisStore(BudgetStore):
    """A budget kept in Redis; see the module docstring for the keys."""

    def __init__(self, parts: SplitResult, host_key: str, setting: str) -> None:
        self.place = redacted(parts)
        self._setting = setting
        db_text = parts.path.lstrip("/") or "0"
        if not db_text.isdigit():
            raise ConfigError(setting, f"the Redis database must be a number, as in redis://host:6379/0: {self.place}")
        if not parts.hostname:
            raise ConfigError(setting, f"the Redis URL has no host: {self.place}")
        password = unquote(parts.password) if parts.password else None
        self._secret = password
        self._client = redis.Redis(
            host=parts.hostname,
            port=parts.port or 6379,
            db=int(db_text),
            username=unquote(parts.username) if parts.username else None,
            password=password,
            ssl=parts.scheme == "rediss",
            socket_connect_timeout=3.0,
            socket_timeout=5.0,
            health_check_interval=30,
        )
        prefix = f"{KEY_PREFIX}{host_key}:"
        self._bucket_key = prefix + "bucket"
        self._block_key = prefix + "block"
        self._runs_key = prefix + "runs"
        self._run_prefix = prefix + "run:"
        self._set_block = self._client.register_script(_SET_BLOCK_LUA)
        self._call(self._client.ping)
        self._take_lua = _BLOCK_CHECK_LUA + (ALGORITHM.redis_script() or "")
        self._take_sha: str = self._call(self._client.script_load, self._take_lua)

    def _sanitize(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self._secret, "***") if self._secret else text

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one Redis call; turn failures into our errors, never showing the password."""
        try:
            return fn(*args, **kwargs)
        except redis.AuthenticationError as exc:
            raise ConfigError(
                self._setting, f"Redis at {self.place} refused the credentials: {self._sanitize(exc)}"
            ) from None
        except redis.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise ConfigError(
                    self._setting, f"Redis at {self.place} needs a password: {self._sanitize(exc)}"
                ) from None
            raise DependencyUnavailable(self._setting, f"Redis at {self.place} failed: {self._sanitize(exc)}") from None
        except redis.RedisError as exc:
            raise DependencyUnavailable(
                self._setting, f"cannot reach Redis at {self.place}: {self._sanitize(exc)}; retry later"
            ) from None

    def take(self, rates: list[Rate], now_ms: int) -> tuple[float | None, Decision]:
        # The library's GCRA arguments (header: now, weight, ttl, number of rates, then per rate).
        ttl_ms = max(math.ceil(2 * r.burst * r.interval / r.limit) for r in rates)
        args = [now_ms, 1, max(ttl_ms, 1000), len(rates), *ALGORITHM.redis_args(rates)]
        keys = [self._bucket_key, self._block_key]
        try:
            reply = self._client.evalsha(self._take_sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            # Redis restarted or flushed its scripts: load ours again, once.
            self._take_sha = self._call(self._client.script_load, self._take_lua)
            reply = self._call(self._client.evalsha, self._take_sha, len(keys), *keys, *args)
        except redis.RedisError as exc:
            self._call(_reraise, exc)
        index = int(reply[0])
        if index == _BLOCKED:
            return float(reply[1]), ADMITTED
        if index < 0:
            return None, ADMITTED
        return None, Decision(failing_rate=rates[index], retry_after_ms=max(1, int(reply[1])))

    def heartbeat(self, run: RunInfo, ttl_s: float) -> list[RunInfo]:
        pipe = self._client.pipeline(transaction=False)
        pipe.set(self._run_prefix + run.run_id, json.dumps(run.to_json()), px=int(ttl_s * 1000))
        pipe.sadd(self._runs_key, run.run_id)
        pipe.smembers(self._runs_key)
        ids = sorted(x.decode() for x in self._call(pipe.execute)[2])
        return self._live(ids)

    def _live(self, ids: list[str]) -> list[RunInfo]:
        if not ids:
            return []
        values = self._call(self._client.mget, [self._run_prefix + i for i in ids])
        gone = [i for i, v in zip(ids, values, strict=True) if v is None]
        if gone:
            self._call(self._client.srem, self._runs_key, *gone)
        return [RunInfo.from_json(json.loads(v)) for v in values if v is not None]

    def runs(self, now: float) -> list[RunInfo]:
        ids = sorted(x.decode() for x in self._call(self._client.smembers, self._runs_key))
        return self._live(ids)

    def unregister(self, run_id: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.delete(self._run_prefix + run_id)
        pipe.srem(self._runs_key, run_id)
        self._call(pipe.execute)

    def set_block(self, until: float, now: float) -> float:
        px = max(1, int((until - now) * 1000))
        stored = self._call(self._set_block, keys=[self._block_key], args=[repr(until), px])
        return float(stored)

    def get_block(self, now: float) -> float | None:
        value = self._call(self._client.get, self._block_key)
        return float(value) if value is not None and float(value) > now else None

    def clear_block(self) -> None:
        self._call(self._client.delete, self._block_key)

    def close(self) -> None:
        self._client.close()


def _reraise(exc: BaseException) -> None:
    raise exc
