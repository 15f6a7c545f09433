"""Fixtures of the ``sapa compare`` tests."""
from __future__ import annotations

import fake_task
import pytest


@pytest.fixture
def fake():
    """The fake task (``fake_task.py``), registered for this test."""
    with fake_task.registered() as task:
        yield task
