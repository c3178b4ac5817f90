"""Unit tests for plugins/module_utils/services/replica.py: the options each state uses."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.services.replica import check_state_options

BASE = dict(share="s1", state="present", status=None, replica_state=None, quiesce_wait_time=None,
            availability_zone=None)


@pytest.mark.parametrize("state, over, misplaced", [
    ("absent", {"status": "available"}, "status"),
    ("promoted", {"replica_state": "out_of_sync", "availability_zone": "nova"}, "replica_state, availability_zone"),
    ("present", {"quiesce_wait_time": 0}, "quiesce_wait_time"),
    ("resynced", {"availability_zone": ""}, "availability_zone"),
])
def test_options_of_other_states_are_refused(state, over, misplaced):
    with pytest.raises(InvalidRequest) as info:
        check_state_options(dict(BASE, state=state, **over))
    assert str(info.value) == ("Cannot make a replica of share s1 %s: %s apply to other states (see the module "
                               "documentation)" % (state, misplaced))


@pytest.mark.parametrize("state, over", [
    ("present", {"status": "available", "replica_state": "in_sync", "availability_zone": "nova"}),
    ("promoted", {"quiesce_wait_time": 0}),
    ("absent", {"status": ""}),
])
def test_options_of_the_requested_state_pass(state, over):
    check_state_options(dict(BASE, state=state, **over))
