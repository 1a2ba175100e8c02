"""The table of a `--workers` group's open connections: a process may accept while it holds
at most SLACK more than the fewest of its serving siblings; empty slots do not count."""

from __future__ import annotations

import functools
from pathlib import Path

from agenthost.runtime.connection_shares import NO_PROCESS, SLACK, ConnectionShares


def test_a_process_may_accept_up_to_the_fewest_sibling_plus_slack(tmp_path: Path) -> None:
    path = str(tmp_path / "connections")
    ConnectionShares.create(path, 3)
    counts = [0, 0, 0]
    shares = [
        ConnectionShares(path, i, 3, functools.partial(counts.__getitem__, i)) for i in range(3)
    ]
    assert shares[0].allowance(shares[0].publish()) is None  # no sibling serving yet
    counts[1], counts[2] = 40, 25
    shares[1].publish()
    shares[2].publish()
    assert shares[0].allowance(shares[0].publish()) == 25 + SLACK
    counts[0] = 30
    assert shares[0].allowance(shares[0].publish()) == 25 + SLACK - 30
    assert shares[1].allowance(40) == 0  # far over its share: leave new ones to the others
    assert shares[0].allowance(shares[0].publish(pending=10)) == 0  # accepted, not yet set up


def test_an_exited_or_leaving_process_is_not_waited_for(tmp_path: Path) -> None:
    path = str(tmp_path / "connections")
    ConnectionShares.create(path, 2)
    first = ConnectionShares(path, 0, 2, lambda: 100)
    second = ConnectionShares(path, 1, 2, lambda: 0)
    first.publish()
    second.publish()
    assert first.allowance(100) == 0
    second.leave()
    assert second.held(1) == NO_PROCESS
    assert first.allowance(100) is None
    second.publish()
    ConnectionShares.vacate(path, 1)  # the supervisor, when the process in slot 1 exits
    assert first.allowance(100) is None
    first.close()
    second.close()
