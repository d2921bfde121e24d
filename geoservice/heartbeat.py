"""Worker liveness in Redis: each worker process refreshes a key with a TTL; readers list live keys."""

from __future__ import annotations

import redis

TTL_S = 30


def _key(queue: str, worker: str) -> str:
    return f"geoservice:{queue}:worker:{worker}"


def beat(client: redis.Redis, queue: str, worker: str) -> None:
    """Mark ``worker`` alive for the next TTL_S seconds."""
    client.set(_key(queue, worker), "1", ex=TTL_S)


def alive_workers(client: redis.Redis, queue: str) -> list[str]:
    """Return the names of workers that beat within the TTL."""
    prefix = _key(queue, "")
    return sorted(k.decode()[len(prefix):] for k in client.scan_iter(match=prefix + "*", count=100))
