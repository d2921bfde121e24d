"""The chunk scheduler and chunk state (``db/repositories/chunks.py``) on a real PostgreSQL, without workers:
fair choice across users, leases, take-over from dead or expired holders, and completion counted once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy import text

from geoservice.config import Settings
from geoservice.db.engine import transaction
from geoservice.db.models import AnalysisPlan
from geoservice.db.repositories import chunks as repo
from geoservice.db.repositories import tasks as tasks_repo
from tests.conftest import make_user


def task_with_chunks(factory: Any, owner: uuid.UUID, queue: str, count: int) -> uuid.UUID:
    with transaction(factory) as s:
        task = tasks_repo.accept(s, name="t", description=None, analysis_type="reproject", parameters={},
                                 created_by=owner, max_attempts=3, queue=queue, supermap_request=None)
        assert tasks_repo.claim(s, task.id, "planner", 60, []) is not None
        repo.add_plan(s, AnalysisPlan(task_id=task.id, strategy="map", result_dataset_id=uuid.uuid4(),
                                      stage_table="unused", srid=4326, crs="EPSG:4326", chunks_total=count,
                                      features_total=count, vertices_total=count),
                      [{"id": uuid.uuid4(), "task_id": task.id, "owner_id": owner, "seq": i, "fids": [i + 1],
                        "feature_count": 1, "vertex_count": 1, "max_attempts": 3} for i in range(count)])
        assert tasks_repo.fan_out(s, task.id, "planner", count)
        return task.id


@pytest.fixture
def queue() -> str:
    return f"q-sched-{uuid.uuid4().hex[:6]}"


def claim(factory: Any, queue: str, owner: str, dead: list[str] | None = None) -> repo.ChunkClaim | None:
    with transaction(factory) as s:
        return repo.claim_next(s, queue, owner, 60, dead or [])


def test_a_user_with_many_queued_chunks_does_not_starve_another(factory: Any, settings: Settings,
                                                                 queue: str) -> None:
    flood_user, small_user = (uuid.UUID(make_user(settings, ["analyst"])[0]) for _ in range(2))
    flood = task_with_chunks(factory, flood_user, queue, 30)
    small = task_with_chunks(factory, small_user, queue, 2)
    order = [claim(factory, queue, f"w:{i}:x") for i in range(6)]
    assert all(c is not None for c in order)
    tasks = [c.task_id for c in order if c is not None]
    # the flood waited longest, so it goes first; then users alternate by how many chunks each has running
    assert tasks[:4] == [flood, small, flood, small] and tasks[4:] == [flood, flood]


def test_leases_takeovers_and_completion_counted_once(factory: Any, settings: Settings, queue: str) -> None:
    user = uuid.UUID(make_user(settings, ["analyst"])[0])
    task = task_with_chunks(factory, user, queue, 3)
    first = claim(factory, queue, "h:1:a")
    assert first is not None and first.attempt == 1 and first.seq == 0 and first.fids == [1]
    with transaction(factory) as s:
        assert repo.renew(s, first.chunk_id, "h:1:a", 60) and not repo.renew(s, first.chunk_id, "h:2:b", 60)
    # a dead holder's chunk is taken over at once; an expired lease too
    second = claim(factory, queue, "h:2:b", dead=["h:1:a"])
    assert second is not None and second.chunk_id == first.chunk_id and second.attempt == 2
    with transaction(factory) as s:
        assert not repo.complete(s, first.chunk_id, "h:1:a", 1, {})  # the old attempt can no longer write
        assert repo.lock_if_holding(s, second.chunk_id, "h:2:b")
        assert repo.complete(s, second.chunk_id, "h:2:b", 1, {"count": 1})
        assert tasks_repo.chunk_done(s, task, repo.work_done(s, task)) == (1, 3)
    rest = [claim(factory, queue, f"h:3:{i}") for i in range(2)]
    assert {c.seq for c in rest if c} == {1, 2} and claim(factory, queue, "h:4:z") is None
    with transaction(factory) as s:
        s.execute(text("UPDATE analysis_chunks SET lease_expires_at = now() - interval '1 s' WHERE id = :i"),
                  {"i": rest[0].chunk_id})  # type: ignore[union-attr]
    taken = claim(factory, queue, "h:5:e")
    assert taken is not None and taken.chunk_id == rest[0].chunk_id  # type: ignore[union-attr]
    with transaction(factory) as s:
        for c, owner in ((taken, "h:5:e"), (rest[1], "h:3:1")):
            assert c is not None and repo.complete(s, c.chunk_id, owner, 1, {})
        assert tasks_repo.chunk_done(s, task, 0.66) == (2, 3)
        assert tasks_repo.chunk_done(s, task, 1.0) == (3, 3)  # exactly one caller sees the last
        progress = s.execute(text("SELECT progress FROM analysis_tasks WHERE id = :i"), {"i": task}).scalar()
    assert float(progress) == 95.0


def test_dismissed_tasks_give_no_chunks(factory: Any, settings: Settings, queue: str) -> None:
    user = uuid.UUID(make_user(settings, ["analyst"])[0])
    task = task_with_chunks(factory, user, queue, 2)
    with transaction(factory) as s:
        assert tasks_repo.dismiss(s, task) == "running"
        assert repo.dismiss_for_task(s, task) == 2
    assert claim(factory, queue, "h:1:a") is None
