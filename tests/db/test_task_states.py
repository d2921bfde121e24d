"""The one owner of task state (``db/repositories/tasks.py``): every allowed and every refused transition, on a
real PostgreSQL, without a worker. Final statuses are never left; a stale lease holder can never write."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from geoservice.config import Settings
from geoservice.db.engine import transaction
from geoservice.db.models import AnalysisTask
from geoservice.db.repositories import tasks as repo
from tests.conftest import make_user

RECORD = {"resource": "datasets/d@geoservice/buffer", "body": {}}



@pytest.fixture(scope="module")
def owner(settings: Settings) -> uuid.UUID:
    return uuid.UUID(make_user(settings, ["analyst"])[0])


def new_task(factory: Any, owner: uuid.UUID, *, record: Any = RECORD) -> uuid.UUID:
    with transaction(factory) as s:
        task = repo.accept(s, name="t", description=None, analysis_type="buffer", parameters={}, created_by=owner,
                           max_attempts=3, queue="q-states", supermap_request=record)
        return task.id


def row(factory: Any, task_id: uuid.UUID) -> AnalysisTask:
    with factory() as s:
        task = s.get(AnalysisTask, task_id)
        assert task is not None
        s.expunge(task)
        return task


def do(factory: Any, fn: Any, *args: Any, **kw: Any) -> Any:
    with transaction(factory) as s:
        return fn(s, *args, **kw)


def claimed(factory: Any, owner: uuid.UUID, holder: str = "h:1:a") -> uuid.UUID:
    task_id = new_task(factory, owner)
    assert do(factory, repo.claim, task_id, holder, 60, []) is not None
    return task_id


def succeed(s: Session, task_id: uuid.UUID, holder: str, result: Any = None) -> bool:
    if repo.lock_if_holding(s, task_id, holder) is None:
        return False
    return repo.succeed(s, task_id, holder, result_dataset_id=None, supermap_result=result)


def test_accept_and_mark_enqueued(factory: Any, owner: uuid.UUID) -> None:
    task_id = new_task(factory, owner)
    t = row(factory, task_id)
    assert (t.status, t.phase, float(t.progress), t.attempts) == ("accepted", "accepted", 0, 0)
    assert t.enqueued_at is not None  # stamped at insert; cleared when the send after commit fails
    do(factory, repo.clear_enqueued, task_id)
    assert row(factory, task_id).enqueued_at is None
    assert do(factory, repo.mark_enqueued, [task_id]) == 1 and row(factory, task_id).enqueued_at is not None
    do(factory, repo.dismiss, task_id)
    assert do(factory, repo.mark_enqueued, [task_id]) == 0  # a final task is not sent again


def test_claim_takes_accepted_expired_or_dead_leases_only(factory: Any, owner: uuid.UUID) -> None:
    task_id = new_task(factory, owner)
    first = do(factory, repo.claim, task_id, "h:1:a", 60, [])
    assert first is not None and first.attempt == 1 and row(factory, task_id).status == "running"
    assert do(factory, repo.claim, task_id, "h:2:b", 60, []) is None  # a live lease: refused
    assert do(factory, repo.claim, task_id, "h:2:b", 60, ["h:1:a"]).attempt == 2  # its holder died on this host
    with transaction(factory) as s:  # the lease runs out
        s.execute(text("UPDATE analysis_tasks SET lease_expires_at = now() - interval '1 s' WHERE id = :i"),
                  {"i": task_id})
    third = do(factory, repo.claim, task_id, "h:3:c", 60, [])
    assert third is not None and third.attempt == 3 and row(factory, task_id).lease_owner == "h:3:c"


def test_only_the_lease_holder_renews_reports_and_finishes(factory: Any, owner: uuid.UUID) -> None:
    task_id = claimed(factory, owner)
    assert do(factory, repo.renew_lease, task_id, "h:1:a", 60) is True
    assert do(factory, repo.renew_lease, task_id, "someone:9:z", 60) is False
    assert do(factory, repo.write_progress, task_id, "h:1:a", 42.5, "computing") is True
    assert do(factory, repo.write_progress, task_id, "someone:9:z", 99, "computing") is False
    assert float(row(factory, task_id).progress) == 42.5
    assert do(factory, succeed, task_id, "someone:9:z") is False
    assert do(factory, repo.fail, task_id, "x", "InternalError", owner="someone:9:z") is False
    assert row(factory, task_id).status == "running"
    assert do(factory, succeed, task_id, "h:1:a", {"succeed": True}) is True
    t = row(factory, task_id)
    assert (t.status, float(t.progress), t.lease_owner, t.supermap_result) == ("successful", 100, None,
                                                                                 {"succeed": True})
    assert t.completed_at is not None


def test_failures_record_the_iserver_error_user_or_service_fault(factory: Any, owner: uuid.UUID) -> None:
    user_error = claimed(factory, owner)
    assert do(factory, repo.fail, user_error, "the input has no features", "EmptyInput", owner="h:1:a") is True
    t = row(factory, user_error)
    assert (t.status, t.error_code, t.phase) == ("failed", "EmptyInput", "failed")
    assert t.supermap_result == {"succeed": False, "error": {"code": 400, "errorMsg": "the input has no features"}}
    crash = claimed(factory, owner)
    assert do(factory, repo.fail, crash, "boom", "InternalError") is True  # owner None: whoever holds it
    assert row(factory, crash).supermap_result["error"]["code"] == 500
    never_started = new_task(factory, owner)
    assert do(factory, repo.fail, never_started, "too late", "TimeLimitExceeded") is True
    native = new_task(factory, owner, record=None)  # no iServer equivalent: no iServer result either
    assert do(factory, repo.fail, native, "x", "EmptyInput") is True and row(factory, native).supermap_result is None


def test_dismiss_from_accepted_or_running_and_nothing_after(factory: Any, owner: uuid.UUID) -> None:
    accepted = new_task(factory, owner)
    assert do(factory, repo.dismiss, accepted) == "accepted"
    running = claimed(factory, owner)
    assert do(factory, repo.dismiss, running) == "running"
    t = row(factory, running)
    assert (t.status, t.lease_owner, t.cancel_requested_at is not None) == ("dismissed", None, True)
    assert t.supermap_result == {"succeed": False, "error": {"code": 410, "errorMsg": "the analysis was cancelled"}}
    # the attempt that was running finds its lease gone: it can neither report, renew, store nor fail
    assert do(factory, repo.write_progress, running, "h:1:a", 50, "computing") is False
    assert do(factory, repo.renew_lease, running, "h:1:a", 60) is False
    assert do(factory, succeed, running, "h:1:a") is False
    assert do(factory, repo.fail, running, "x", "InternalError") is False
    assert do(factory, repo.claim, running, "h:2:b", 60, ["h:1:a"]) is None
    assert row(factory, running).status == "dismissed"


@pytest.mark.parametrize("final", ["successful", "failed", "dismissed"])
def test_final_statuses_are_never_left(factory: Any, owner: uuid.UUID, final: str) -> None:
    task_id = claimed(factory, owner)
    {"successful": lambda: do(factory, succeed, task_id, "h:1:a"),
     "failed": lambda: do(factory, repo.fail, task_id, "x", "EmptyInput", owner="h:1:a"),
     "dismissed": lambda: do(factory, repo.dismiss, task_id)}[final]()
    before = row(factory, task_id)
    assert before.status == final
    assert do(factory, repo.claim, task_id, "h:2:b", 60, ["h:1:a"]) is None
    assert do(factory, repo.dismiss, task_id) is None
    assert do(factory, repo.fail, task_id, "x", "InternalError") is False
    assert do(factory, succeed, task_id, "h:1:a") is False
    assert do(factory, repo.write_progress, task_id, "h:1:a", 10, "computing") is False
    after = row(factory, task_id)
    assert (after.status, after.supermap_result, after.error_code) == (before.status, before.supermap_result,
                                                                       before.error_code)


def test_fail_exhausted_takes_only_expired_last_attempts(factory: Any, owner: uuid.UUID) -> None:
    exhausted, alive = claimed(factory, owner), claimed(factory, owner)
    with transaction(factory) as s:
        s.execute(text("UPDATE analysis_tasks SET attempts = max_attempts, lease_expires_at = now() - "
                            "interval '1 s' WHERE id = :i"), {"i": exhausted})
        s.execute(text("UPDATE analysis_tasks SET attempts = max_attempts WHERE id = :i"), {"i": alive})
    assert do(factory, repo.fail_exhausted, "q-states") == 1
    t = row(factory, exhausted)
    assert (t.status, t.error_code) == ("failed", "MaxAttemptsExceeded") and "after 3 attempts" in t.error_message
    assert row(factory, alive).status == "running"


def test_record_inline_inserts_a_finished_task_with_its_result(factory: Any, owner: uuid.UUID) -> None:
    task_id = uuid.uuid4()
    with transaction(factory) as s:
        repo.record_inline(s, repo.InlineRecord(
            id=task_id, name="inline", description=None, analysis_type="buffer", parameters={"k": 1},
            created_by=owner, max_attempts=3, queue="q-states", started_at=datetime.now(UTC), supermap_request=RECORD,
            supermap_result={"succeed": True}, result_dataset_id=None, result_type="inline",
            data={"feature_count": 1}, result_metadata={}))
    t = row(factory, task_id)
    assert (t.status, float(t.progress), t.attempts, t.phase) == ("successful", 100, 1, "successful")
    assert t.started_at is not None and t.completed_at is not None and t.completed_at >= t.started_at
    assert t.supermap_result == {"succeed": True} and t.parameters == {"k": 1}
    with factory() as s:
        assert [(r.result_type, r.data) for r in repo.results_for(s, task_id)] == [("inline", {"feature_count": 1})]
    assert do(factory, repo.claim, task_id, "h:1:a", 60, []) is None
