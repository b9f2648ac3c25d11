"""A schema-driven fuzz run (schemathesis over the service's own OpenAPI), of requests the schema
allows and requests it does not: the answer is never a 5xx."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from equilibra.service.app import create_app
from equilibra.service.settings import load_settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

HOME = Path(tempfile.mkdtemp(prefix="equilibra-fuzz-"))
APP = create_app(
    load_settings(
        None,
        environ={},
        db=f"sqlite:///{HOME / 'shop.db'}",
        model_dir=str(HOME / "model"),
        admin_key="fuzz",
    ),
    background=False,
)
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Valid requests and invalid ones (wrong types, missing fields, values out of range).
schema.config.generation.update(
    modes=[schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
)


@pytest.fixture(scope="module", autouse=True)
def running():
    # The lifespan opens the store and the engine the routes use.
    with TestClient(APP) as client:
        client.post(
            "/v1/events",
            json=[{"user_id": "u1", "item_id": "i1", "type": "view", "timestamp": 1_767_000_000}],
            headers={"Authorization": "Bearer fuzz"},
        )
        yield


@pytest.mark.slow
@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_no_request_gets_a_server_error(case: schemathesis.Case) -> None:
    response = case.call(headers={"Authorization": "Bearer fuzz"})
    assert response.status_code < 500, (case.method, case.path, case.body, response.text[:300])
