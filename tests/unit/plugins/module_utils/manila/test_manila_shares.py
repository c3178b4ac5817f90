"""Unit tests for plugins/module_utils/manila/shares.py: create, update, delete, idempotency."""

from __future__ import annotations

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import Busy, InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.manila.shares import ManilaShareManager

from fake_manila import ALPHA, Backend, Ctx, FakeAPI

RULES = [{"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "rw"}]


def manager(api, check_mode=False, **waits):
    """The manager under test; ``waits`` are the run's wait options (wait, timeout, sleep)."""
    return ManilaShareManager(Ctx(check_mode, **waits), Backend(), api=api)


def present(api, check_mode=False, **over):
    args = dict(name="s1", pool_address=ALPHA, size=1, protocol="NFS", share_type="default", extra_specs=None,
                access_rules=RULES, description=None, metadata=None)
    args.update(over)
    return manager(api, check_mode, sleep=0).present(**args)


def test_create_once_with_rules_check_mode_first():
    api = FakeAPI()
    check = present(api, check_mode=True)
    assert check["changed"] is True and check["share"]["host"] == ALPHA and api.calls == []
    created = present(api)
    assert created["changed"] is True
    assert [c[0] for c in api.calls] == ["create_share", "allow_access"]
    assert api.calls[0] == ("create_share", "s1", ALPHA)
    assert present(api)["changed"] is False
    assert len(api.calls) == 2


def test_update_resizes_and_replaces_rules():
    api = FakeAPI()
    present(api)
    rules = [{"access_type": "ip", "access_to": "10.0.0.0/24", "access_level": "ro"}]
    check = present(api, check_mode=True, size=2, access_rules=rules)
    assert check["changed"] is True and check["share"]["size"] == 2
    assert len(api.calls) == 2
    result = present(api, size=2, access_rules=rules, description="d")
    assert result["changed"] is True
    assert [c[0] for c in api.calls[2:]] == ["resize", "update_share", "deny_access", "allow_access"]
    assert present(api, size=2, access_rules=rules, description="d")["changed"] is False


def test_refusals():
    api = FakeAPI()
    with pytest.raises(InvalidRequest, match="size \\(GiB\\) is required"):
        present(api, size=None)
    with pytest.raises(InvalidRequest, match="the extra specs belong to the share type"):
        present(api, extra_specs={"snapshot_support": True})
    present(api)
    with pytest.raises(InvalidRequest, match="Cannot change the protocol of share s1 from NFS to CIFS"):
        present(api, protocol="CIFS")
    api.shares_by_id["id-s1"]["task_state"] = "migration_driver_in_progress"
    with pytest.raises(Busy, match="busy with task migration_driver_in_progress"):
        manager(api).absent("s1")


def test_delete_once():
    api = FakeAPI()
    present(api)
    assert manager(api, check_mode=True).absent("s1")["changed"] is True
    assert manager(api, sleep=0).absent("s1")["changed"] is True
    assert manager(api).absent("s1")["changed"] is False
    assert [c[0] for c in api.calls] == ["create_share", "allow_access", "delete_share"]


def test_info_shows_migration_and_progress():
    api = FakeAPI()
    api.add_share("s1", task_state="migration_driver_in_progress")
    api.instances_by_share["id-s1"] = [{"host": ALPHA, "status": "migrating"},
                                       {"host": "devhost@beta#p1", "status": "migrating_to"}]
    (view,) = manager(api).info("s1")
    assert view["total_progress"] == 50
    assert view["migration"] == {"task_state": "migration_driver_in_progress", "source_pool": ALPHA,
                                 "destination_pool": "devhost@beta#p1", "mechanism": "driver"}
    assert manager(api).info("nosuch") == []
