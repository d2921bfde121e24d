"""The agent layer (issue #7): the tool registry, argument validation, output shaping and the MCP server.

Agents call *tools*, not REST endpoints. ``tools`` builds every tool from a params model (the analysis
operations' own models, so the worker, ``POST /api/v1/tasks`` and agents share one schema), ``validation``
checks arguments against the agent-facing JSON schema (units required on every distance), ``shaping`` keeps
results small enough for a context window, and ``mcp_server`` exposes the same tools over MCP. The calls
themselves (sessions, invocations, rate limits, idempotency, events) are ``geoservice.agents.service``.
"""
