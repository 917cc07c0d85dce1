"""The dashboard: server-rendered pages at ``/`` for people (``router``, mounted by
``agent_core.server.app.create_app``); see ``router.py`` for the pages and ``auth.py`` for the
sign-in cookie and CSRF."""

from agent_core.server.dashboard.router import router

__all__ = ["router"]
