"""Client-chosen ids: the whole string must match, a trailing newline included."""

from __future__ import annotations

import pytest

from agenthost.core.errors import BadRequest, InvalidSessionId
from agenthost.core.ids import check_session_id, check_turn_id, new_session_id, new_turn_id


@pytest.mark.parametrize("bad", ["", "abc\n", "a/b", "a b", "x" * 129, "é"])
def test_bad_ids_are_refused(bad: str) -> None:
    with pytest.raises(InvalidSessionId):
        check_session_id(bad)
    with pytest.raises(BadRequest):
        check_turn_id(bad)


def test_generated_ids_pass_their_own_check() -> None:
    assert check_session_id(new_session_id()) and check_turn_id(new_turn_id())
