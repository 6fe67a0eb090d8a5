"""Property-based fuzzing of every operation in the OpenAPI document (schemathesis + Hypothesis).

Requests are generated from the document the app serves, valid and invalid alike, and sent
through the WSGI app. Every answer must be a documented status code, never a 5xx, with the
content type and body schema the document promises for that status.

The run is bounded and reproducible: 25 generated examples per operation (plus schemathesis's
coverage cases), derandomized.
"""
from __future__ import annotations

import io

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api import create_app

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
BOUNDED = settings(max_examples=25, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


@pytest.fixture(scope="module")
def local_app(tmp_path_factory):
    """Local single-user mode, on a temporary data folder. The rate limit is lifted so that every
    generated upload reaches the pipeline (429 is checked on its own below)."""
    return create_app({"TESTING": True, "DATA_DIR": tmp_path_factory.mktemp("fuzz-local") / "data",
                       "RATE_LIMIT": "100000 per minute"})


@pytest.fixture(scope="module")
def firebase_app(tmp_path_factory):
    """Firebase mode with no token: every protected operation must answer a documented 401.

    The emulator host points at a closed port, so nothing here can reach the network."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FIREBASE_AUTH_EMULATOR_HOST", "127.0.0.1:9")
        yield create_app({"TESTING": True, "DATA_DIR": tmp_path_factory.mktemp("fuzz-firebase") / "data",
                          "FIREBASE_PROJECT_ID": "demo-branet-fuzz"})


@pytest.fixture(scope="module")
def local_schema(local_app):
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", local_app)


@pytest.fixture(scope="module")
def firebase_schema(firebase_app):
    return schemathesis.openapi.from_wsgi("/v1/openapi.json", firebase_app)


local = schemathesis.pytest.from_fixture("local_schema")
firebase = schemathesis.pytest.from_fixture("firebase_schema")


@local.parametrize()
@BOUNDED
def test_every_operation_answers_as_documented(case):
    case.call_and_validate(checks=CHECKS)


@firebase.parametrize()
@BOUNDED
def test_every_operation_answers_as_documented_without_a_token(case):
    case.call_and_validate(checks=CHECKS)


def test_the_document_covers_every_route(local_app, local_schema):
    """Fuzzing only reaches what the document lists: every API route must be in it."""
    documented = {(op.method.upper(), op.path) for op in (r.ok() for r in local_schema.get_all_operations())}
    served = set()
    for rule in local_app.url_map.iter_rules():
        path = rule.rule.replace("<string:", "{").replace("<", "{").replace(">", "}")
        if not (path.startswith("/v1/analyses") or path.startswith("/evaluate-image") or path in
                {"/v1/health", "/v1/ready", "/v1/models"}):
            continue
        served |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served and served <= documented, served - documented


@pytest.mark.parametrize("path", ["/v1/analyses", "/evaluate-image/{modality}/"])
def test_rate_limited_answers_are_documented(tmp_path, path):
    app = create_app({"TESTING": True, "DATA_DIR": tmp_path / "data", "RATE_LIMIT": "1 per minute"})
    operation = schemathesis.openapi.from_wsgi("/v1/openapi.json", app)[path]["POST"]
    url = path.replace("{modality}", "ultrasound")
    client = app.test_client()
    responses = [client.post(url, data={"modality": "ultrasound", "file": (io.BytesIO(b"not an image"), "x.png")},
                             content_type="multipart/form-data") for _ in range(2)]
    assert [r.status_code for r in responses] == [415, 429]
    refused = responses[1]
    assert refused.headers["Retry-After"].isdigit()
    assert operation.responses.find_by_status_code(429) is not None, f"429 is not documented for POST {path}"
    operation.validate_response(refused)
