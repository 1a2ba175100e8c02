"""Shared fixtures: real servers (redis-server, Redis Cluster, PostgreSQL, llm-sim,
agenthost) on free loopback ports, started and stopped by the tests themselves."""

pytest_plugins = [
    "tests.fixtures.agenthost",
    "tests.fixtures.redis",
    "tests.fixtures.llm",
    "tests.fixtures.node",
    "tests.fixtures.postgres",
    "tests.fixtures.browser",
]
