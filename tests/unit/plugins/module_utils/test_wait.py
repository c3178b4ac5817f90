"""Unit tests for plugins/module_utils/wait.py, with a fake clock and a fake sleeper."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError, WaitTimeout
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits, wait_for

from mobility_helpers import FakeClock


def states_feed(*sequence):
    """fetch() returning {'state': s, 'n': i} for each state in turn, the last one forever."""
    calls = []

    def fetch():
        i = min(len(calls), len(sequence) - 1)
        calls.append(i)
        return {"state": sequence[i], "n": len(calls)}
    fetch.calls = calls
    return fetch


def run(fetch, clock, timeout=60, sleep=5, **kw):
    return wait_for(fetch, lambda r: r["state"], success=("done",), pending=("working", "queued"),
                    failure=("failed",), timeout=timeout, sleep=sleep, what="migration of share s1",
                    clock=clock.clock, sleeper=clock.sleep, **kw)


def test_returns_at_once_on_success_without_sleeping():
    clock = FakeClock()
    result = run(states_feed("done"), clock)
    assert result == {"state": "done", "n": 1}
    assert clock.sleeps == []


def test_polls_pending_states_until_success():
    clock = FakeClock()
    seen = []
    fetch = states_feed("queued", "working", "working", "done")
    result = run(fetch, clock, on_poll=seen.append)
    assert result["n"] == 4
    assert clock.sleeps == [5, 5, 5]
    assert [r["state"] for r in seen] == ["queued", "working", "working", "done"]


def test_failure_state_raises_with_the_result():
    clock = FakeClock()
    with pytest.raises(StorageError) as info:
        run(states_feed("working", "failed"), clock)
    assert not isinstance(info.value, WaitTimeout)
    assert str(info.value) == "migration of share s1 reached failed while waiting for done"
    assert info.value.details["result"] == {"state": "failed", "n": 2}


def test_unexpected_state_is_never_waited_on():
    clock = FakeClock()
    with pytest.raises(StorageError) as info:
        run(states_feed("working", "exploded"), clock)
    assert not isinstance(info.value, WaitTimeout)
    assert "unexpected state exploded" in str(info.value)
    assert info.value.details["result"]["state"] == "exploded"
    assert clock.sleeps == [5]


def test_timeout_carries_the_partial_result_the_object_and_the_seconds():
    clock = FakeClock()
    fetch = states_feed("working")
    with pytest.raises(WaitTimeout) as info:
        run(fetch, clock, timeout=12, sleep=5)
    message = str(info.value)
    assert message == ("Timed out after 12 seconds waiting for migration of share s1 to reach done "
                       "(last state working)")
    assert info.value.details["result"] == {"state": "working", "n": 4}
    # 5 + 5 + 2: the last sleep is cut to the time left, never beyond the timeout
    assert clock.sleeps == [5, 5, 2]
    assert clock.now - 1000.0 == 12


def test_zero_timeout_polls_once():
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as info:
        run(states_feed("working"), clock, timeout=0)
    assert "after 0 seconds" in str(info.value)
    assert clock.sleeps == []


def test_success_after_the_deadline_is_still_success_when_seen_first():
    clock = FakeClock()
    result = run(states_feed("working", "working", "done"), clock, timeout=10, sleep=5)
    assert result["state"] == "done"
    assert clock.sleeps == [5, 5]


def test_several_success_states_are_named_in_messages():
    clock = FakeClock()
    with pytest.raises(WaitTimeout) as info:
        wait_for(states_feed("working"), lambda r: r["state"], success=("a", "b"), pending=("working",),
                 failure=(), timeout=1, sleep=1, what="x", clock=clock.clock, sleeper=clock.sleep)
    assert "to reach a or b" in str(info.value)


def test_waits_from_the_module_options_and_never_in_check_mode():
    assert tuple(Waits.from_params({"wait": True, "wait_timeout": 0, "wait_sleep": 0})) == (True, 0, 0)
    assert tuple(Waits.from_params({"wait": True, "wait_timeout": 60, "wait_sleep": 2}, check_mode=True)) == (False, 60, 2)
    assert tuple(Waits.from_params({"wait": False, "wait_timeout": 60, "wait_sleep": 2})) == (False, 60, 2)
    # a module without wait options waits with the defaults
    assert tuple(Waits.from_params({"name": "x"})) == (True, 3600, 5)
    assert repr(Waits()) == "Waits(wait=True, timeout=3600, sleep=5)"
