"""The one application service for analyses, whatever front door a request came through.

Every surface (the task API, the SuperMap iServer surface, the agent tools over REST and MCP, and later the
OGC API and the console) is an adapter that translates a request into these calls and renders the answer:

* ``prepare``: validate the parameters with the operation's params model and check access to every input,
  once (``Prepared``: the request and the stored datasets it reads).
* ``run_inline``: small inputs, in the calling process, through the operation registry; recorded as an
  ``analysis_tasks`` row that is already ``successful`` (plus its ``analysis_results`` row), whoever calls it.
* ``submit``: an ``accepted`` task, sent to the workers once the caller's transaction commits.
* ``record_result``: the worker's (and ``run_inline``'s) one way of storing an output and its result row.
* ``result``: the one reader of a task's results and result dataset; ``get_task``, ``list_tasks``, ``cancel``.
* ``follow``: the one waiter for a task's final status (SSE, MCP progress and SuperMap waits build on it).
"""

from geoservice.services.analyses.follow import Snapshot, follow, wait_final
from geoservice.services.analyses.inline_input import inline_layer
from geoservice.services.analyses.layers import load_layers
from geoservice.services.analyses.prepare import Prepared, prepare, registry
from geoservice.services.analyses.running import (
    InlineRun,
    Recorded,
    compute,
    record_result,
    run_inline,
    store_task_result,
)
from geoservice.services.analyses.tasks import TaskResult, cancel, get_task, list_tasks, result, submit

__all__ = ["InlineRun", "Prepared", "Recorded", "Snapshot", "TaskResult", "cancel", "compute", "follow", "get_task",
           "inline_layer", "list_tasks", "load_layers", "prepare", "record_result", "registry", "result",
           "run_inline", "store_task_result", "submit", "wait_final"]
