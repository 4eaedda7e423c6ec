"""A Ray instance of 2 CPUs for the Ray engine's tests, started once per test module."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="the ray engine's tests need Ray Data (pip install 'datakit[ray]')")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             logging_level="ERROR")
    yield
    ray.shutdown()
