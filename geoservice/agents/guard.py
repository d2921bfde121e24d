"""Per-(tool, user) rate limits and Idempotency-Keys for agent tool calls, shared by every process in Redis.

The rate limit is a token bucket refilled at ``rate_limit_qps`` tokens per second with room for as many
(a burst equal to the rate), kept in one Redis hash and updated by a Lua script, so all API and MCP processes
draw from the same bucket atomically; the script reads Redis's clock, so process clocks never matter.

An Idempotency-Key is remembered per (user, tool) with a hash of the arguments: ``pending`` while the first
call runs (a short TTL, so a crashed call does not block the key for a day), then ``done`` with the answer
for ``agent_idempotency_ttl_s``. Only calls that succeed are remembered; a failed one releases its key.
"""

from __future__ import annotations

import hashlib
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
import redis

from geoservice.errors import Conflict, GeoserviceError, InvalidInput

_BUCKET = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = capacity; ts = now end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""
PENDING_TTL_S = 300
POLL_S = 0.1


class RateLimited(GeoserviceError):
    code = "RateLimited"
    status_code = 429


def take_token(client: redis.Redis, tool: str, user_id: uuid.UUID, rate_qps: int) -> None:
    """Spend one token of the (tool, user) bucket, or raise 429 with ``retry_after`` (whole seconds)."""
    if rate_qps <= 0:
        return
    allowed, wait = client.register_script(_BUCKET)(keys=[f"geoservice:agent-rate:{tool}:{user_id}"],
                                                    args=[rate_qps, rate_qps])
    if int(allowed) != 1:
        retry = max(1, math.ceil(float(wait)))
        raise RateLimited(f"{tool}: rate limit of {rate_qps} calls per second exceeded; retry in {retry} s",
                          field="tool", extra={"retry_after": retry})


def args_digest(args: Any) -> str:
    return hashlib.sha256(orjson.dumps(args, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass
class IdempotentCall:
    """The Redis record of one Idempotency-Key: begin, then complete (success) or release (failure)."""

    client: redis.Redis
    key: str
    digest: str
    ttl_s: int

    @classmethod
    def open(cls, client: redis.Redis, user_id: uuid.UUID, tool: str, idempotency_key: str, args: Any,
             ttl_s: int) -> IdempotentCall:
        hashed = hashlib.sha256(idempotency_key.encode()).hexdigest()
        return cls(client, f"geoservice:agent-idem:{user_id}:{tool}:{hashed}", args_digest(args), ttl_s)

    def begin(self, wait_s: float) -> dict[str, Any] | None:
        """Claim the key (None: run the call) or return the first call's answer for a retry.

        Raises:
            InvalidInput: the key was used with other arguments (422).
            Conflict: the first call is still running after ``wait_s`` (409, retry later).
        """
        pending = orjson.dumps({"state": "pending", "args": self.digest})
        deadline = time.monotonic() + wait_s
        while True:
            if self.client.set(self.key, pending, nx=True, ex=PENDING_TTL_S):
                return None
            raw = self.client.get(self.key)
            if raw is None:
                continue  # expired in between: claim it
            record = orjson.loads(raw)
            if record["args"] != self.digest:
                raise InvalidInput("Idempotency-Key: this key was already used for a call of this tool with other "
                                   "arguments; use a new key for a new call", field="Idempotency-Key")
            if record["state"] == "done":
                return dict(record["response"])
            if time.monotonic() >= deadline:
                raise Conflict("Idempotency-Key: the first call with this key is still running; retry later",
                               field="Idempotency-Key", extra={"retry_after": 1})
            time.sleep(POLL_S)

    def complete(self, response: dict[str, Any]) -> None:
        record = {"state": "done", "args": self.digest, "response": response}
        self.client.set(self.key, orjson.dumps(record, default=str), ex=self.ttl_s)

    def release(self) -> None:
        self.client.delete(self.key)
