"""gunicorn settings: `gunicorn -c gunicorn.conf.py 'api:create_app()'`.

Without a Firebase project the service is single-user and binds to loopback only; with one
(production, e.g. App Engine) it binds to all interfaces on $PORT.
"""
import os

_host = "0.0.0.0" if os.environ.get("BRANET_FIREBASE_PROJECT_ID") else "127.0.0.1"
bind = f"{_host}:{os.environ.get('PORT', '8080')}"
# One process holds the models once; threads serve concurrent requests (torch releases the GIL).
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
threads = int(os.environ.get("BRANET_THREADS", "4"))
preload_app = True  # load the models before forking workers
timeout = 120
graceful_timeout = 30
limit_request_line = 8190
limit_request_fields = 100
accesslog = None  # the app logs each request as one JSON line, without query strings


def on_starting(server) -> None:
    """Refuse to serve a weights file that fails its checksum: exit before any worker starts, so
    that a deployment fails visibly instead of running an instance that is never ready."""
    from api.models import refusal_to_start

    reason = refusal_to_start(server.app.wsgi())  # the app preloaded above: nothing loads twice
    if reason:
        server.log.critical("refusing to start: %s", reason)
        raise SystemExit(1)
