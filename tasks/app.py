"""The Celery application of the workers."""

from __future__ import annotations

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from geoservice.config import Settings, get_settings
from geoservice.queue import celery_config


def create_celery_app(settings: Settings) -> Celery:
    """Build the worker's Celery app from settings (explicit config, no autodiscovery magic)."""
    app = Celery("geoservice", include=["tasks.analysis"])
    app.conf.update(celery_config(settings))
    app.conf.task_queues = None
    app.conf.worker_concurrency = 2
    return app


celery_app = create_celery_app(get_settings())


@worker_ready.connect
def _start_housekeeper(sender: object = None, **_kwargs: object) -> None:
    """Start heartbeats and the sweeper in the worker's main process."""
    from tasks.sweeper import Housekeeper

    name = getattr(sender, "hostname", "") or ""
    keeper = Housekeeper(get_settings(), name)
    keeper.start()

    @worker_shutdown.connect(weak=False)
    def _stop(**_kw: object) -> None:
        keeper.stop()
