"""Checks of tool arguments done before any Redis work: thread ids, topics, limits, timestamps."""

from __future__ import annotations

import pytest

from broker.errors import BrokerError
from broker.mail.inputs import check_limit, check_thread_id, check_topic, since_micros


# -- validators ----------------------------------------------------------------------------------
def test_thread_topic_limit_and_timestamp_validators() -> None:
    assert check_thread_id(None) == check_thread_id("  ") == ""
    assert check_thread_id(" FEAT-123 ") == "FEAT-123"
    assert check_thread_id("a" * 128) == "a" * 128
    assert check_topic("  build_status-2 ") == "build_status-2"
    assert check_topic("t" * 64) == "t" * 64
    assert check_limit(1) == 1 and check_limit(1000) == 1000
    assert since_micros(None) == since_micros(" ") == ""
    assert since_micros("2025-01-01T00:00:00Z") == str(1_735_689_600 * 10**6)
    assert since_micros("2025-01-01T00:00:00") == str(1_735_689_600 * 10**6)
    assert since_micros("2025-01-01T02:00:00.000001+02:00") == str(1_735_689_600 * 10**6 + 1)
    assert since_micros("1969-12-31T23:59:59Z") == since_micros("1970-01-01T00:00:00Z") == ""  # all mail is newer
    for bad, function in (("a" * 129, check_thread_id), ("_x", check_thread_id), ("t" * 65, check_topic)):
        with pytest.raises(BrokerError):
            function(bad)
