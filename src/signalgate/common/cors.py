"""CORS for the API listeners: off unless `server.corsAllowedOrigins` lists origins.

Kubernaut's services answer a browser's preflight with 200 for the origins they are set up
for; without a list we add nothing, so a browser on another origin cannot call the API (the
safe default for a service whose callers are Alertmanager and controllers). Starlette's
pure-ASGI `CORSMiddleware` does the work; this module only decides whether and how it is
set up, once, for both services.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

ALLOWED_METHODS = ("GET", "POST", "PATCH", "OPTIONS")
ALLOWED_HEADERS = ("Authorization", "Content-Type", "X-Request-ID", "X-Timestamp")
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After")
PREFLIGHT_MAX_AGE = 600  # seconds a browser may reuse a preflight answer


def with_cors(app: ASGIApp, allowed_origins: Sequence[str]) -> ASGIApp:
    """`app` itself when no origin is allowed; else `app` behind the CORS middleware.

    `*` allows every origin (credentials are never allowed, so a bearer token still has to
    be sent explicitly by the caller)."""
    if not allowed_origins:
        return app
    return CORSMiddleware(
        app,
        allow_origins=list(allowed_origins),
        allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS,
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE,
    )
