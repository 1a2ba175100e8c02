"""Shared fixtures: real servers (redis-server, Redis Cluster, PostgreSQL, llm-sim,
agenthost) on free loopback ports, started and stopped by the tests themselves."""

import pytest

pytest_plugins = [
    "tests.fixtures.agenthost",
    "tests.fixtures.redis",
    "tests.fixtures.llm",
    "tests.fixtures.node",
    "tests.fixtures.postgres",
    "tests.fixtures.browser",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The `slow` tests (several processes each, tens of seconds) first: pytest-xdist hands
    tests out in this order, so a long test taken last would run on alone while the other
    workers sit idle at the end of the suite."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
