"""SuperMap iServer's REST payload shapes, pure: Geometry JSON both ways, result bodies, task records.

Low in the layers (it imports no database, HTTP or service code), so the task engine can record every
task's ``supermap_request``/``supermap_result`` where a task is accepted and where its result is recorded,
and the SuperMap surface (``geoservice.supermap``, an adapter above the services) renders the same shapes.
Reference: shared/reference/supermap-rest.md.
"""
