"""Fixtures for the detection tests: one local Spark session per test process."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """A local Spark session (2 cores, 4 shuffle partitions) shared by every test of this
    process that needs Spark, started on first use and stopped at the end of the run.

    It is the active session, so :func:`mlthreat.detect.spark.get_session` returns it: the
    command line's ``--engine spark`` and ``detect stream`` run in the test's process on it
    instead of starting a JVM each (15-20 s apiece on busy cores). Under pytest-xdist each
    worker that runs a Spark test starts one JVM."""
    pytest.importorskip("pyspark")
    from mlthreat.detect import spark as engine

    # read by get_session only while it builds the session: set for that, then put back
    saved = os.environ.get("MLTHREAT_SPARK_PARTITIONS")
    os.environ["MLTHREAT_SPARK_PARTITIONS"] = "4"
    try:
        session = engine.get_session("local[2]")
    finally:
        if saved is None:
            del os.environ["MLTHREAT_SPARK_PARTITIONS"]
        else:
            os.environ["MLTHREAT_SPARK_PARTITIONS"] = saved
    yield session
    session.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` (end to end: tests/detect/test_spark.py is the longest file) are
    collected first, order otherwise kept. pytest-xdist's ``--dist loadfile`` hands files to
    workers in collection order, so the longest file starts at once on one worker while the
    other works through the rest, instead of starting late and finishing alone. (A hook in
    this conftest sees every collected item, not only those under tests/detect.)"""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
