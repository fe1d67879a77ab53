"""The operations pages' test client, shared by the operations, reconciler and timeline tests.

A pytest plugin (tests/conftest.py loads it).
"""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.workflow import Workflow


@pytest.fixture
def ops_app(app: Flask, wf: Workflow) -> Flask:
    """The app reading the same bank as the workflow, so the pages show what the steps did there."""
    app.extensions["fx.bank"] = wf.bank
    return app


@pytest.fixture
def ops(ops_app: Flask) -> FlaskClient:
    """The operations pages, as the local operator (no OPERATORS outside production)."""
    return ops_app.test_client()
