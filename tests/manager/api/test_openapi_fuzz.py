"""Property-based fuzzing of the read API from its own OpenAPI schema (schemathesis): no
input, valid or not, makes a route answer 5xx, every status is a documented one, and JSON
answers match their documented schemas."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.manager.api.conftest import STUDY

pytestmark = [pytest.mark.integration]
EXAMPLES_PER_ROUTE = 20  # 16 operations: ~320 requests, well under a minute
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]


def test_no_route_answers_5xx_or_off_schema(app: FastAPI) -> None:
    """Each documented operation gets EXAMPLES_PER_ROUTE generated requests (half of them
    aimed at the real study, so the fuzz reaches past the 404s)."""
    # Built here rather than with schemathesis' pytest plugin: the app comes from a fixture,
    # and the plugin's lazy fixture loader does not work with this pytest.
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    aim = itertools.cycle([True, False])
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            if case.path_parameters and "name" in case.path_parameters and next(aim):
                case.path_parameters["name"] = STUDY
            case.call_and_validate(checks=CHECKS)

        check()
