"""The HTTP service: ``agent-core serve``.

``agent_core.server.app.create_app(settings)`` builds the FastAPI application (API under ``/v1``,
health, metrics, the dashboard at ``/``); ``agent_core.server.hub.TenantHub`` authenticates API
keys and hands out one tenant-bound ``SessionManager`` per tenant. Needs the ``server`` extra:
``pip install 'agent-core[server]'``. The routes, errors and formats are in ``docs/api.md``.
"""
