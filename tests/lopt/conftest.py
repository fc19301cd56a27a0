"""Fixtures for the learned-optimizer tests: a tiny regression task and the digits MLP."""

from __future__ import annotations

import pytest
from lopt_testutil import tiny_task

from metaopt import tasks


@pytest.fixture(scope="session")
def tiny() -> tasks.Task:
    return tiny_task()


@pytest.fixture(scope="session")
def digits():
    data = tasks.load_digits()
    return tasks.mlp_classifier(data), data
