"""The dashboard (`evalkeeper serve`): FastAPI app factory, JSON API under /api, server-rendered pages."""

from evalkeeper.server.app import create_app, serve
from evalkeeper.server.services import DashboardService, ExplorerQuery

__all__ = ["DashboardService", "ExplorerQuery", "create_app", "serve"]
