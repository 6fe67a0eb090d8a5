"""Request ids, one JSON access log line per request, Prometheus metrics and security headers.

What is logged is chosen field by field: the route pattern (never the concrete path or its query
string), method, status, duration and stage timings. Images, tokens, headers and user details
never reach a log line.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass

from flask import Flask, Response, current_app, g, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

REQUEST_ID_HEADER = "X-Request-ID"
# An incoming id is echoed only if it cannot smuggle anything into a log line or a header.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
ACCESS_LOGGER = "branet.access"
UNMATCHED_ROUTE = "<unmatched>"  # 404/405: the concrete path is the caller's, not a label
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DOCS_PATH = "/v1/docs"

API_CSP = "default-src 'none'; frame-ancestors 'none'"
# The docs page bootstraps Swagger UI with an inline script, and the bundle sets inline styles
# and data: icons; everything else it loads comes from this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message and the record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **getattr(record, "fields", {}),
        }
        return json.dumps(entry, separators=(",", ":"))


@dataclass(frozen=True)
class Metrics:
    """One registry per app, so that apps built side by side (tests) do not share counts."""

    registry: CollectorRegistry
    latency: Histogram
    in_flight: Gauge
    errors: Counter
    inference: Histogram

    @classmethod
    def create(cls) -> "Metrics":
        registry = CollectorRegistry()
        return cls(
            registry=registry,
            latency=Histogram("branet_http_request_duration_seconds", "Request latency",
                              ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=registry),
            in_flight=Gauge("branet_http_requests_in_flight", "Requests being served", registry=registry),
            errors=Counter("branet_http_errors", "JSON error responses by error code", ["code"],
                           registry=registry),
            inference=Histogram("branet_inference_stage_duration_seconds", "Analysis time per pipeline stage",
                                ["stage"], buckets=LATENCY_BUCKETS, registry=registry),
        )


def _metrics() -> Metrics:
    return current_app.extensions["branet.metrics"]


def count_error(code: str) -> None:
    """Count one JSON error response by its code (called by api.errors.error_response)."""
    metrics = current_app.extensions.get("branet.metrics")
    if metrics is not None:
        metrics.errors.labels(code=code).inc()


def route_pattern() -> str:
    """The matched URL rule without converters (`/v1/analyses/<analysis_id>`), never the path."""
    if request.url_rule is None:
        return UNMATCHED_ROUTE
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"<\1>", request.url_rule.rule)


def _start_request() -> None:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = incoming if SAFE_REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()
    _metrics().in_flight.inc()
    g.counted_in_flight = True


def _finish_request(response: Response) -> Response:
    _add_security_headers(response)
    if "request_started" not in g:  # failed before our first hook ran: nothing to time or log
        return response
    duration = time.perf_counter() - g.request_started
    method = request.method if request.method in KNOWN_METHODS else "OTHER"
    route = route_pattern()
    stages = g.get("stage_ms")
    metrics = _metrics()
    metrics.latency.labels(method=method, route=route, status=str(response.status_code)).observe(duration)
    for stage, ms in (stages or {}).items():
        metrics.inference.labels(stage=stage).observe(ms / 1000)
    fields = {
        "request_id": g.request_id,
        "method": method,
        "path": route,
        "status": response.status_code,
        "duration_ms": round(duration * 1000, 2),
    }
    if stages:
        fields["stages"] = stages
    logging.getLogger(ACCESS_LOGGER).info("request", extra={"fields": fields})
    response.headers[REQUEST_ID_HEADER] = g.request_id
    return response


def _add_security_headers(response: Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    docs = request.path == DOCS_PATH or request.path.startswith(DOCS_PATH + "/")
    response.headers.setdefault("Content-Security-Policy", DOCS_CSP if docs else API_CSP)
    if request.path.startswith("/v1/") and response.is_json:
        response.headers.setdefault("Cache-Control", "no-store")


def _end_request(_error: BaseException | None) -> None:
    if g.pop("counted_in_flight", False):
        _metrics().in_flight.dec()


def _install_access_logger() -> None:
    """JSON lines on stderr for the access logger, once per process (apps may be built many times)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler.formatter, JsonFormatter) for handler in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
    logger.propagate = False  # one line per request, not a second plain-text copy from the root


def metrics_view() -> Response:
    """This app's registry in the text exposition format (OpenMetrics if the scraper asks for it)."""
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(_metrics().registry), content_type=content_type)


def init_app(app: Flask) -> None:
    """Install the hooks; call it before the other extensions so that its timing wraps theirs."""
    app.extensions["branet.metrics"] = Metrics.create()
    _install_access_logger()
    app.before_request(_start_request)
    app.after_request(_finish_request)  # after_request hooks run in reverse: this one runs last
    app.teardown_request(_end_request)
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
