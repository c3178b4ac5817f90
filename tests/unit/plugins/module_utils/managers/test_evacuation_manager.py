"""Unit tests for plugins/module_utils/managers/evacuation.py (module migration_plan): the shares of a
source read from the records and counted on disk, the plan stored with the records and followed on a
rerun, check mode and diff, rates measured from earlier copies, bad input refused."""

from __future__ import annotations

import json
import os
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.managers.evacuation import (
    MigrationPlanManager, measured_rates)
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner

from mobility_helpers import RULE, Env, backend_spec

OTHER = "stor2@be2#x"


@pytest.fixture
def env(tmp_path):
    root = tmp_path / "pools"
    return Env(tmp_path, backends=[backend_spec(root), backend_spec(root, name="be2", pools=("x",), host="stor2")])


def params(**kw):
    p = {"name": "evac", "source": Env.A, "destinations": None, "headroom": 0.0, "rates": None, "flags": None,
         "new_plan": False}
    p.update(kw)
    return p


def fill(env, share, files):
    path = env.share_path(env.A, share)
    for index, size in enumerate(files):
        with open(os.path.join(path, "f%d" % index), "wb") as handle:
            handle.write(b"x" * size)


def run(env, check_mode=False, **kw):
    return MigrationPlanManager(env.ctx(check_mode)).run(params(**kw))


def plan_file(env):
    return os.path.join(env.pool_path(env.A), ".mobility", "plans", "evac.json")


def test_tree_counts_counts_bytes_and_files(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "one").write_bytes(b"abc")
    (tmp_path / "two").write_bytes(b"12345")
    os.symlink("two", tmp_path / "link")
    assert LocalTransport(CommandRunner()).tree_counts(str(tmp_path)) == {"bytes": 3 + 5 + len("two"), "files": 3}


def test_tree_counts_since_counts_what_changed_at_or_after_it(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "old").write_bytes(b"abc")
    (tmp_path / "kept").write_bytes(b"12345")
    old = time.time() - 3600
    for path in (tmp_path / "d" / "old", tmp_path / "kept"):
        os.utime(path, (old, old))
    transport = LocalTransport(CommandRunner())
    # Nothing changed after a time in the future; everything (files and both folders) after an hour ago.
    future = transport.tree_counts(str(tmp_path), since=time.time() + 60)
    assert future == {"bytes": 8, "files": 2, "changed_bytes": 0, "changed_files": 0}
    # The ctime of a file whose mtime was set back still says it changed: an edited mtime hides nothing.
    recent = transport.tree_counts(str(tmp_path), since=time.time() - 60)
    assert recent == {"bytes": 8, "files": 2, "changed_bytes": 8, "changed_files": 4}
    assert transport.tree_counts(str(tmp_path)) == {"bytes": 8, "files": 2}


def test_tree_counts_over_the_ssh_helper(tmp_path):
    from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import SshOptions
    from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import SshTransport

    class Loopback(SshTransport):
        """The ssh transport with ssh taken out, as in transport/test_ssh.py: the helper runs here."""

        def __init__(self):
            super().__init__(CommandRunner(), SshOptions("loop"))
            self._control = "unused"

        def remote(self, argv):
            return [str(a) for a in argv]

        def close(self):
            self._control = None
            super().close()

    (tmp_path / "one").write_bytes(b"abcd")
    transport = Loopback()
    try:
        assert transport.tree_counts(str(tmp_path)) == {"bytes": 4, "files": 1}
        assert transport.tree_counts(str(tmp_path), time.time() - 60) == {
            "bytes": 4, "files": 1, "changed_bytes": 4, "changed_files": 2}
    finally:
        transport.close()


def test_plan_reads_shares_of_the_source_counts_them_and_stores_the_plan(env):
    env.create_share("s1", rules=[RULE])
    env.create_share("s2", rules=[RULE])
    env.create_share("elsewhere", pool=env.B, rules=[RULE])
    fill(env, "s1", [1000, 2000, 3000])
    fill(env, "s2", [10])
    result = run(env)
    moves = dict((m["share"], m) for m in result["plan"]["moves"])
    assert sorted(moves) == ["s1", "s2"], "only the shares of the source pool"
    assert (moves["s1"]["bytes"], moves["s1"]["files"]) == (6000, 3)
    assert (moves["s2"]["bytes"], moves["s2"]["files"]) == (10, 1)
    # b shares a and the driver with a: the posix driver renames; x is on another host: a data node copies.
    assert moves["s1"]["destination"] == env.B and moves["s1"]["mechanism"] == "driver"
    assert result["changed"] and result["stored"]
    with open(plan_file(env)) as handle:
        stored = json.load(handle)
    assert stored["plan"] == result["plan"]
    assert stored["request"]["destinations"] == [env.B, OTHER]


def test_host_assisted_to_another_host_and_estimate_from_given_rate(env):
    env.create_share("s1", rules=[RULE])
    fill(env, "s1", [4096])
    rates = {"host": {"bytes_per_second": 1024, "seconds_per_file": 0, "fixed_seconds": 0}}
    result = run(env, destinations=[OTHER], rates=rates)
    move = result["plan"]["moves"][0]
    assert move["mechanism"] == "host" and move["destination"] == OTHER
    assert move["estimated_copy_seconds"] == 4.0
    assert result["rates"]["source"] == "given"


def test_rerun_follows_the_stored_plan_and_new_plan_replaces_it(env):
    env.create_share("s1", rules=[RULE])
    first = run(env)
    env.create_share("s2", rules=[RULE])
    again = run(env)
    assert not again["changed"] and again["stored"]
    assert again["plan"] == first["plan"], "a rerun follows the stored plan, not the shares as they are now"
    fresh = run(env, new_plan=True)
    assert fresh["changed"]
    assert sorted(m["share"] for m in fresh["plan"]["moves"]) == ["s1", "s2"]
    assert fresh["diff"]["before"] == first["plan"] and fresh["diff"]["after"] == fresh["plan"]
    with open(plan_file(env)) as handle:
        assert json.load(handle)["plan"] == fresh["plan"]


def test_check_mode_shows_the_plan_and_stores_nothing(env):
    env.create_share("s1", rules=[RULE])
    result = run(env, check_mode=True)
    assert result["changed"] and not result["stored"]
    assert [m["share"] for m in result["diff"]["after"]["moves"]] == ["s1"]
    assert result["diff"]["before"] == {}
    assert not os.path.exists(os.path.dirname(plan_file(env)))


def test_stored_plan_of_another_request_is_refused_and_kept(env):
    env.create_share("s1", rules=[RULE])
    run(env)
    with open(plan_file(env)) as handle:
        before = handle.read()
    with pytest.raises(InvalidRequest, match="another request.*new_plan: true"):
        run(env, destinations=[OTHER])
    with open(plan_file(env)) as handle:
        assert handle.read() == before


def test_share_that_fits_nowhere_is_listed_with_the_reason(env):
    env.create_share("s1", rules=[RULE])
    fill(env, "s1", [100])
    result = run(env, headroom=0.9999999999)
    assert result["plan"]["moves"] == []
    [unplaced] = result["plan"]["unplaced"]
    assert unplaced["share"] == "s1" and "needs 100 bytes" in unplaced["reason"]
    assert env.B in unplaced["reason"] and OTHER in unplaced["reason"]


def test_rates_measured_from_earlier_copies(env):
    env.create_share("done", pool=env.B, rules=[RULE])
    env.edit("done", migration={"copy": {"bytes": 8000, "copy_seconds": 2.0}})
    env.create_share("s1", rules=[RULE])
    fill(env, "s1", [4000])
    result = run(env, destinations=[OTHER], rates={"host": {"seconds_per_file": 0, "fixed_seconds": 0}})
    assert result["rates"]["source"] == "measured"
    assert result["rates"]["host_bytes_per_second"] == 4000
    assert result["plan"]["moves"][0]["estimated_copy_seconds"] == 1.0


def test_measured_rates_ignore_copies_without_time():
    assert measured_rates([{"migration": {"copy": {"bytes": 10, "copy_seconds": 0}}}, {"migration": None}]) is None


@pytest.mark.parametrize("kw, message", [
    ({"source": "nohost"}, "Invalid source 'nohost'"),
    ({"source": "localhost@nobackend"}, "Invalid source 'localhost@nobackend'"),
    ({"destinations": [Env.A]}, "is a source pool"),
    ({"destinations": ["localhost@be1#zzz"]}, "zzz"),
    ({"headroom": 1.0}, "Invalid headroom"),
    ({"name": "../x"}, "plan name"),
    ({"rates": {"bogus": {}}}, "bogus"),
])
def test_bad_input_is_refused_and_changes_nothing(env, kw, message):
    env.create_share("s1", rules=[RULE])
    state = env.state()
    with pytest.raises((InvalidRequest, NotFound), match=message):
        run(env, **kw)
    assert env.state() == state


def test_backend_and_host_sources(env):
    env.create_share("s1", rules=[RULE])
    env.create_share("s2", pool=env.B, rules=[RULE])
    result = run(env, source="localhost@be1")
    assert sorted(m["share"] for m in result["plan"]["moves"]) == ["s1", "s2"]
    assert all(m["destination"] == OTHER for m in result["plan"]["moves"])
    assert result["path"].startswith(env.pool_path(env.A))
    hosted = run(env, source="localhost", name="by-host")
    assert hosted["plan"]["moves"] == result["plan"]["moves"]


# -- the assignment of the host-assisted copies to data nodes (evacuate_pool) --------------------

def copy_params(**kw):
    base = {"destinations": [OTHER], "rates": {"host": {"bytes_per_second": 1000, "seconds_per_file": 0, "fixed_seconds": 0}},
            "data_nodes": ["n1", "n2", "n3"], "copies_per_data_node": 2, "copies_per_storage_host": None}
    base.update(kw)
    return base


def stored_document(env):
    with open(plan_file(env)) as handle:
        return json.load(handle)


def six_shares(env):
    for index in range(6):
        env.create_share("s%d" % index, rules=[RULE])
        fill(env, "s%d" % index, [1000 * (index + 1)])


def test_copies_are_assigned_in_lanes_stored_with_the_plan_and_followed(env):
    six_shares(env)
    result = run(env, **copy_params(copies_per_data_node=1))
    copies = result["copies"]
    assert result["changed"] and copies["followed"] is False and copies["reason"] == "first assignment"
    assert copies["mode"] == "lanes" and copies["rounds"] == []
    assert sorted(a["share"] for a in copies["assignments"]) == ["s%d" % i for i in range(6)]
    # Six copies of 6000..1000 bytes at 1000 bytes/s, three one-slot nodes: longest first, each to
    # the lane that ends it first (n1 6 s, n2 5 s, n3 4 s, then n3 +3, n2 +2, n1 +1).
    lanes = {(lane["data_node"], lane["slot"]): lane["shares"] for lane in copies["lanes"]}
    assert lanes == {("n1", 1): ["s5", "s0"], ("n2", 1): ["s4", "s1"], ("n3", 1): ["s3", "s2"]}, lanes
    assert copies["estimated_seconds"] == 7.0
    assert stored_document(env)["copies"]["lanes"] == copies["lanes"]
    again = run(env, **copy_params(copies_per_data_node=1, data_nodes=["n3", "n2", "n1"]))
    assert not again["changed"] and again["copies"]["followed"] is True
    assert again["copies"]["lanes"] == copies["lanes"]


def test_a_storage_host_limit_assigns_in_rounds(env):
    six_shares(env)
    copies = run(env, **copy_params(copies_per_storage_host=6))["copies"]
    assert copies["mode"] == "rounds" and copies["lanes"] == []
    # Six copies, three nodes of two slots, a limit of six: one round, two copies on each node.
    assert len(copies["rounds"]) == 1
    assert sorted(a["data_node"] for a in copies["assignments"]) == ["n1", "n1", "n2", "n2", "n3", "n3"]


def test_a_storage_host_limit_of_one_puts_every_copy_in_its_own_round(env):
    six_shares(env)
    result = run(env, **copy_params(copies_per_storage_host=1))
    assert result["copies"]["mode"] == "rounds"
    # Every copy reads from localhost and writes to stor2: one at a time.
    assert [len(r) for r in result["copies"]["rounds"]] == [1] * 6
    assert [r[0]["share"] for r in result["copies"]["rounds"]] == ["s5", "s4", "s3", "s2", "s1", "s0"]


def test_a_lost_data_node_leaves_its_copies_to_the_others_and_running_copies_stay(env):
    six_shares(env)
    first = run(env, **copy_params(copies_per_data_node=1))
    where = {a["share"]: a["data_node"] for a in first["copies"]["assignments"]}
    on_n1 = sorted(s for s, n in where.items() if n == "n1")
    on_n2 = sorted(s for s, n in where.items() if n == "n2")
    # One copy of n1 runs (pinned there on the rerun), one share finished its phase 1, n2 is gone.
    env.edit(on_n1[0], task_state="data_copying_in_progress",
             migration={"copy_job": {"data_node": "n1", "job_id": "j1", "status_file": "/x"}})
    env.edit(on_n2[0], task_state="data_copying_completed")
    again = run(env, **copy_params(copies_per_data_node=1, data_nodes=["n1", "n3"]))
    copies = again["copies"]
    assert again["changed"] and copies["followed"] is False and copies["reason"] == "data nodes gone: n2"
    moved = {a["share"]: a["data_node"] for a in copies["assignments"]}
    assert set(moved.values()) <= {"n1", "n3"}
    assert sorted(moved) == sorted(set(where) - {on_n2[0]}) and copies["phase1_done"] == [on_n2[0]]
    assert moved[on_n1[0]] == "n1" and copies["pinned"] == {on_n1[0]: "n1"}
    # One lane per one-slot node; the running copy first in n1's lane.
    assert sorted((lane["data_node"], lane["slot"]) for lane in copies["lanes"]) == [("n1", 1), ("n3", 1)]
    assert [lane for lane in copies["lanes"] if lane["data_node"] == "n1"][0]["shares"][0] == on_n1[0]
    assert stored_document(env)["copies"]["data_nodes"] == ["n1", "n3"]


def test_a_copy_on_a_vanished_data_node_is_held_until_the_node_is_confirmed_lost(env):
    """n2 copies s-x and leaves the data nodes (cut off, or out of the inventory): its copy may still
    be writing, so the rerun holds the share (assigned nowhere, with the reason) and keeps holding it
    on every rerun until lost_data_nodes names n2; then the share goes to the others."""
    six_shares(env)
    first = run(env, **copy_params(copies_per_data_node=1))
    on_n2 = sorted(a["share"] for a in first["copies"]["assignments"] if a["data_node"] == "n2")
    env.edit(on_n2[0], task_state="data_copying_in_progress",
             migration={"copy_job": {"data_node": "n2", "job_id": "j2", "status_file": "/x"}})
    nodes = ["n1", "n3"]
    held = run(env, **copy_params(copies_per_data_node=1, data_nodes=nodes))["copies"]
    assert [h["share"] for h in held["held"]] == [on_n2[0]] and held["held"][0]["data_node"] == "n2"
    assert "copy job j2 may still be running on data node n2" in held["held"][0]["reason"]
    assert "lost_data_nodes: [n2]" in held["held"][0]["reason"]
    assert on_n2[0] not in [a["share"] for a in held["assignments"]], "a held copy was assigned"
    # Held again on the next rerun: a stored assignment with held shares is not followed blindly.
    again = run(env, **copy_params(copies_per_data_node=1, data_nodes=nodes))["copies"]
    assert again["followed"] is False and [h["share"] for h in again["held"]] == [on_n2[0]]
    confirmed = run(env, **copy_params(copies_per_data_node=1, data_nodes=nodes, lost_data_nodes=["n2"]))["copies"]
    assert confirmed["held"] == [] and confirmed["lost_data_nodes"] == ["n2"]
    moved = {a["share"]: a["data_node"] for a in confirmed["assignments"]}
    assert moved[on_n2[0]] in nodes and "lost data nodes confirmed: n2" in confirmed["reason"]
    assert stored_document(env)["copies"]["lost_data_nodes"] == ["n2"]
    followed = run(env, **copy_params(copies_per_data_node=1, data_nodes=nodes, lost_data_nodes=["n2"]))["copies"]
    assert followed["followed"] is True


def test_a_data_node_cannot_be_given_and_lost_at_once(env):
    six_shares(env)
    run(env, **copy_params())
    before = stored_document(env)
    with pytest.raises(InvalidRequest, match="Invalid lost_data_nodes: n1 is also in data_nodes"):
        run(env, **copy_params(lost_data_nodes=["n1"]))
    with pytest.raises(InvalidRequest, match="a name of its own"):
        run(env, **copy_params(lost_data_nodes=["n9", "n9"]))
    assert stored_document(env) == before, "a refused request changed the stored plan"


def test_without_data_nodes_no_assignment_is_made(env):
    six_shares(env)
    result = run(env, destinations=[OTHER])
    assert result["copies"] is None and "copies" not in stored_document(env)


def test_check_mode_assigns_and_stores_nothing(env):
    six_shares(env)
    run(env, **copy_params())
    before = stored_document(env)
    result = run(env, check_mode=True, **copy_params(data_nodes=["n1"]))
    assert result["changed"] and [a["data_node"] for a in result["copies"]["assignments"]] == ["n1"] * 6
    assert stored_document(env) == before


@pytest.mark.parametrize("kw, message", [
    ({"copies_per_data_node": 0}, "Invalid copies_per_data_node 0: a positive integer"),
    ({"copies_per_data_node": -2}, "Invalid copies_per_data_node -2"),
    ({"copies_per_data_node": True}, "Invalid copies_per_data_node True"),
    ({"copies_per_data_node": "2"}, "Invalid copies_per_data_node '2'"),
    ({"copies_per_storage_host": 0}, "Invalid copies_per_storage_host 0: a positive integer"),
    ({"copies_per_storage_host": 1.5}, "Invalid copies_per_storage_host 1.5"),
    ({"data_nodes": ["n1", "n1"]}, "Invalid data_nodes"),
])
def test_bad_copy_options_are_refused_and_change_nothing(env, kw, message):
    six_shares(env)
    state = env.state()
    with pytest.raises(InvalidRequest, match=message):
        run(env, **copy_params(**kw))
    assert env.state() == state
    # Also with a plan stored: it stays as it was.
    run(env, **copy_params())
    state = env.state()
    with pytest.raises(InvalidRequest, match=message):
        run(env, **copy_params(**kw))
    assert env.state() == state
