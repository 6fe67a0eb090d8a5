"""Request ids, the JSON access log, /metrics and the security headers."""
from __future__ import annotations

import io
import json
import logging
import re

import pytest
from flask import g
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from api.observability import ACCESS_LOGGER, JsonFormatter

SECRET_TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJlLXZhbHVl"


@pytest.fixture
def access_log(caplog):
    """The access logger's records; it does not propagate, so caplog's handler joins it directly."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def access_lines(caplog) -> list[dict]:
    """Each access record as the installed JSON formatter writes it."""
    (formatter,) = {h.formatter for h in logging.getLogger(ACCESS_LOGGER).handlers
                    if isinstance(h.formatter, JsonFormatter)}
    return [json.loads(formatter.format(r)) for r in caplog.records if r.name == ACCESS_LOGGER]


def samples(client) -> dict[tuple[str, frozenset], float]:
    """/metrics parsed by the Prometheus parser: {(sample name, labels): value}."""
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def test_one_json_access_line_per_request_with_its_id(client, access_log):
    response = client.get("/v1/analyses/some-id?limit=5")
    (line,) = access_lines(access_log)
    request_id = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert line["request_id"] == request_id
    assert line["logger"] == ACCESS_LOGGER
    assert line["method"] == "GET" and line["status"] == 404
    assert line["path"] == "/v1/analyses/<analysis_id>"  # the route pattern, not the concrete path
    assert line["duration_ms"] >= 0 and "stages" not in line
    assert "some-id" not in json.dumps(line) and "limit" not in json.dumps(line)


def test_a_safe_incoming_request_id_is_echoed(client, access_log):
    response = client.get("/v1/health", headers={"X-Request-ID": "app-7f3a.42_x"})
    assert response.headers["X-Request-ID"] == "app-7f3a.42_x"
    assert access_lines(access_log)[0]["request_id"] == "app-7f3a.42_x"


@pytest.mark.parametrize("incoming", ["", "x" * 65, "a b", "<script>", '{"forged":1}', "id;rm"])
def test_an_unsafe_incoming_request_id_is_replaced(client, incoming):
    response = client.get("/v1/health", headers={"X-Request-ID": incoming})
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_each_request_gets_its_own_id(client):
    assert client.get("/v1/health").headers["X-Request-ID"] != client.get("/v1/health").headers["X-Request-ID"]


def test_metrics_count_requests_by_route_pattern_and_errors_by_code(client):
    assert client.get("/v1/analyses/some-id").status_code == 404
    assert client.get("/v1/nothing-here").status_code == 404
    metrics = samples(client)
    by_route = frozenset({"method": "GET", "route": "/v1/analyses/<analysis_id>", "status": "404"}.items())
    assert metrics[("branet_http_request_duration_seconds_count", by_route)] == 1
    unmatched = frozenset({"method": "GET", "route": "<unmatched>", "status": "404"}.items())
    assert metrics[("branet_http_request_duration_seconds_count", unmatched)] == 1
    assert metrics[("branet_http_errors_total", frozenset({"code": "not_found"}.items()))] == 2
    assert metrics[("branet_http_requests_in_flight", frozenset())] == 1  # the scrape itself
    text = client.get("/metrics").get_data(as_text=True)
    assert "some-id" not in text and "nothing-here" not in text


def test_metrics_are_per_app(tmp_path, client):
    client.get("/v1/analyses/some-id")
    other = create_app({"TESTING": True, "DATA_DIR": tmp_path / "other"}).test_client()
    assert not any(name == "branet_http_errors_total" for name, _ in samples(other))


def test_stage_timings_are_logged_and_observed(app, access_log):
    # The analysis service hands its stage timings over in flask.g; this route does the same.
    @app.post("/stage-timings")
    def stage_timings():
        g.stage_ms = {"decode": 4.0, "classify": 120.0}
        return {}

    client = app.test_client()
    client.post("/stage-timings")
    (line,) = access_lines(access_log)
    assert line["stages"] == {"decode": 4.0, "classify": 120.0}
    metrics = samples(client)
    classify = frozenset({"stage": "classify"}.items())
    assert metrics[("branet_inference_stage_duration_seconds_count", classify)] == 1
    assert metrics[("branet_inference_stage_duration_seconds_sum", classify)] == pytest.approx(0.12)


def test_metrics_route_is_not_in_the_openapi_document(client):
    assert "/metrics" not in client.get("/v1/openapi.json").get_json()["paths"]


@pytest.mark.parametrize("path", ["/v1/health", "/v1/nothing-here", "/metrics"])
def test_security_headers_on_every_response(client, path):
    headers = client.get(path).headers
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"


def test_v1_json_is_not_cached(client):
    assert client.get("/v1/health").headers["Cache-Control"] == "no-store"
    assert client.get("/v1/nothing-here").headers["Cache-Control"] == "no-store"


def test_docs_page_may_run_its_inline_script_and_nothing_else_may(client):
    docs = client.get("/v1/docs").headers["Content-Security-Policy"]
    assert "script-src 'self' 'unsafe-inline'" in docs and "frame-ancestors 'none'" in docs
    assert "http" not in docs  # nothing from another origin
    api = client.get("/v1/health").headers["Content-Security-Policy"]
    assert "unsafe-inline" not in api


def test_no_token_or_query_string_reaches_any_log(tmp_path, monkeypatch, caplog, access_log):
    monkeypatch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9")  # as in test_auth.py
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "FIREBASE_PROJECT_ID": "demo-branet"})
    client = app.test_client()
    caplog.set_level(logging.DEBUG)
    headers = {"Authorization": f"Bearer {SECRET_TOKEN}"}
    assert client.get("/v1/analyses?limit=5&note=private-query", headers=headers).status_code == 401
    form = {"modality": "ultrasound", "file": (io.BytesIO(b"\x89PNG-not-really"), "scan.png")}
    assert client.post("/v1/analyses", data=form, headers=headers).status_code == 401
    assert len(access_lines(access_log)) == 2
    logged = "\n".join(
        [caplog.text] + [json.dumps(line) for line in access_lines(access_log)]
        + [repr(vars(record)) for record in caplog.records]
    )
    for secret in (SECRET_TOKEN, "c2VjcmV0LXBheWxvYWQ", "Bearer", "private-query", "scan.png"):
        assert secret not in logged
