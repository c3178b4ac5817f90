"""Unit tests for plugins/module_utils/managers/migration_plan.py: destinations, mechanisms, the
rate model, pools never filled past their headroom, shares that fit nowhere, determinism."""

from __future__ import annotations

import copy
import random

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.managers import migration_plan as mp

GiB = 1024 ** 3


def pool(address, host, capacity=100, free=100, driver="posix", fs=None, headroom=0.0, **extra):
    p = {"address": address, "host": host, "backend": address.split("@")[1].split("#")[0], "driver": driver,
         "filesystem": fs or address, "capacity_bytes": capacity * GiB, "free_bytes": free * GiB,
         "headroom": headroom, "capabilities": {"snapshot_support": True}, "replication_domain": "east"}
    p.update(extra)
    return p


def share(name, size_gib, pool_address="h1@old#a", files=1000, **extra):
    s = {"name": name, "pool": pool_address, "bytes": int(size_gib * GiB), "files": files,
         "share_type": {"extra_specs": {}}, "replication_type": None, "snapshots": []}
    s.update(extra)
    return s


SOURCE = pool("h1@old#a", "h1", capacity=1000, free=0, fs="fs-a")


def test_never_overfills_and_counts_earlier_moves():
    # Two pools with 30 GiB usable each (10 % headroom of 100 GiB held back from 40 free).
    dests = [pool("h2@new#x", "h2", free=40, headroom=0.1), pool("h2@new#y", "h2", free=40, headroom=0.1)]
    shares = [share("s%d" % i, 12) for i in range(6)]
    result = mp.plan(shares, [SOURCE] + dests, allowed=[d["address"] for d in dests])
    per_pool = {}
    for move in result["moves"]:
        per_pool[move["destination"]] = per_pool.get(move["destination"], 0) + move["bytes"]
    # Each 30 GiB pool takes two 12 GiB shares; the other two fit nowhere.
    assert sorted(per_pool.values()) == [24 * GiB, 24 * GiB]
    assert len(result["unplaced"]) == 2
    assert all("left above its headroom after earlier moves" in u["reason"] for u in result["unplaced"])
    assert mp.overfilled(result) == []
    assert result["totals"] == dict(result["totals"], placed=4, unplaced=2)


def test_headroom_bytes_counts_instead_of_fraction():
    dest = pool("h2@new#x", "h2", free=40, headroom_bytes=35 * GiB)
    result = mp.plan([share("s1", 6)], [SOURCE, dest], allowed=[dest["address"]])
    assert result["moves"] == [] and "needs %d bytes" % (6 * GiB) in result["unplaced"][0]["reason"]


def test_balances_by_room_left_and_is_deterministic():
    dests = [pool("h2@new#x", "h2", capacity=100, free=90), pool("h3@new#y", "h3", capacity=100, free=50)]
    rng = random.Random(5)
    shares = [share("s%02d" % i, rng.randint(1, 10)) for i in range(20)]
    first = mp.plan(shares, [SOURCE] + dests, allowed=[d["address"] for d in dests])
    shuffled = list(reversed(copy.deepcopy(shares)))
    second = mp.plan(shuffled, list(reversed([SOURCE] + dests)), allowed=[d["address"] for d in reversed(dests)])
    assert first == second
    after = {p["address"]: p["free_bytes_after"] for p in first["pools"]}
    # Worst fit by fraction of room left: both end within one share of each other in free space.
    assert abs(after["h2@new#x"] - after["h3@new#y"]) <= 10 * GiB
    assert [m["share"] for m in first["moves"]] == sorted(m["share"] for m in first["moves"])


def test_mechanism_follows_plan_mechanism_rules():
    same_fs = pool("h1@old#b", "h1", fs="fs-a")
    other_fs = pool("h1@old#c", "h1", fs="fs-c")
    other_host = pool("h2@new#x", "h2")
    btrfs = pool("h1@bt#d", "h1", driver="btrfs")
    s = share("s1", 1)
    assert mp.mechanism_for(s, SOURCE, same_fs) == ("driver", None)
    assert mp.mechanism_for(s, SOURCE, other_fs) == ("host", "the pools are on different filesystems")
    assert mp.mechanism_for(s, SOURCE, other_host)[1] == "the pools are on different hosts (h1, h2)"
    assert "uses driver btrfs" in mp.mechanism_for(s, SOURCE, btrfs)[1]
    # The driver's own refusal of this share (an immutable root) makes it a host copy.
    assert mp.mechanism_for(share("s2", 1, driver_refusal="root is immutable"), SOURCE, same_fs) == ("host", "root is immutable")
    # Snapshots cannot ride a host copy; a flag the driver cannot honour refuses too.
    kind, why = mp.mechanism_for(share("s3", 1, snapshots=["n1"]), SOURCE, other_host)
    assert kind is None and "cannot carry its snapshots (n1)" in why
    kind, why = mp.mechanism_for(s, SOURCE, other_host, {"preserve_metadata": True})
    assert kind is None and "preserve_metadata=true" in why
    assert mp.mechanism_for(share("s4", 1, snapshots=["n1"]), SOURCE, same_fs) == ("driver", None)
    # writable alone, where the driver cannot move the share: a writable host copy (as plan_mechanism).
    assert mp.mechanism_for(s, SOURCE, other_fs, {"writable": True}) == ("host", "the pools are on different filesystems")
    kind, why = mp.mechanism_for(s, SOURCE, other_fs, {"writable": True, "preserve_metadata": True})
    assert kind is None and "writable=true, preserve_metadata=true" in why


def test_prefers_driver_assisted_and_estimates_copy_time():
    same_fs = pool("h1@old#b", "h1", fs="fs-a", capacity=100, free=10)
    far = pool("h2@new#x", "h2", capacity=100, free=100)
    rates = {"host": {"bytes_per_second": GiB, "seconds_per_file": 0.01, "fixed_seconds": 0}}
    result = mp.plan([share("small", 2, files=500), share("big", 20, files=100)], [SOURCE, same_fs, far],
                     allowed=["h1@old#b", "h2@new#x"], rates=rates)
    moves = {m["share"]: m for m in result["moves"]}
    assert moves["small"]["destination"] == "h1@old#b" and moves["small"]["mechanism"] == "driver"
    assert moves["small"]["estimated_copy_seconds"] == 1.0        # a posix rename: the fixed second only
    assert moves["big"]["destination"] == "h2@new#x" and moves["big"]["mechanism"] == "host"
    assert moves["big"]["estimated_copy_seconds"] == 20 + 100 * 0.01
    assert moves["big"]["driver_refusal"] == "the pools are on different hosts (h1, h2)"


def test_capabilities_and_replication_domain():
    no_snap = pool("h2@new#x", "h2", capabilities={"snapshot_support": False})
    west = pool("h2@new#y", "h2", replication_domain="west")
    typed = share("typed", 1, share_type={"extra_specs": {"snapshot_support": "True"}})
    replicated = share("rep", 1, replication_type="readable")
    result = mp.plan([typed, replicated], [SOURCE, no_snap, west], allowed=["h2@new#x", "h2@new#y"])
    moves = {m["share"]: m["destination"] for m in result["moves"]}
    assert moves == {"typed": "h2@new#y", "rep": "h2@new#x"}
    only_west = mp.plan([replicated], [SOURCE, west], allowed=["h2@new#y"])
    assert "replication domain east, the pool is in west" in only_west["unplaced"][0]["reason"]
    only_nosnap = mp.plan([typed], [SOURCE, no_snap], allowed=["h2@new#x"])
    assert ("h2@new#x: Pool h2@new#x cannot serve share type default: it requires snapshot_support=True and the pool "
            "has False") == only_nosnap["unplaced"][0]["reason"]
    # A capability the pool does not state is not held against it (as share creation does).
    silent = pool("h2@new#z", "h2", capabilities={})
    assert mp.plan([typed], [SOURCE, silent], allowed=["h2@new#z"])["moves"][0]["destination"] == "h2@new#z"


def test_plan_id_changes_with_input_only():
    dest = pool("h2@new#x", "h2")
    a = mp.plan([share("s1", 1)], [SOURCE, dest])
    assert a["id"] == mp.plan([share("s1", 1)], [SOURCE, dest])["id"]
    assert a["id"] != mp.plan([share("s1", 2)], [SOURCE, dest])["id"]
    # Without allowed destinations every pool but the share's own is a candidate.
    assert a["moves"][0]["destination"] == "h2@new#x"


@pytest.mark.parametrize("mutate, message", [
    (lambda s, p: s[0].update(bytes=-1), "bytes must be a number >= 0"),
    (lambda s, p: s.append(dict(s[0])), "s1 is listed twice"),
    (lambda s, p: s[0].update(pool="nowhere@x#y"), "its pool 'nowhere@x#y' is not among the pools given"),
    (lambda s, p: p[1].update(free_bytes=p[1]["capacity_bytes"] + 1), "free_bytes"),
    (lambda s, p: p[1].update(headroom=1.5), "headroom must be a fraction"),
    (lambda s, p: p[1].update(driver=""), "driver must be a non-empty string"),
])
def test_bad_input_names_what_is_wrong(mutate, message):
    shares, pools = [share("s1", 1)], [copy.deepcopy(SOURCE), pool("h2@new#x", "h2")]
    mutate(shares, pools)
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        mp.plan(shares, pools)


def test_bad_allowed_and_rates():
    pools = [SOURCE, pool("h2@new#x", "h2")]
    with pytest.raises(InvalidRequest, match="h9@z#z is not among the pools given"):
        mp.plan([share("s1", 1)], pools, allowed=["h9@z#z"])
    with pytest.raises(InvalidRequest, match="host.bytes_per_second must be a number >= 0"):
        mp.plan([share("s1", 1)], pools, rates={"host": {"bytes_per_second": -5}})
    with pytest.raises(InvalidRequest, match="key 'data' is not host, driver"):
        mp.RateModel({"data": {}})
    with pytest.raises(InvalidRequest, match="host.speed is not one of"):
        mp.RateModel({"host": {"speed": 1}})


def test_rate_model_per_driver_key():
    model = mp.RateModel({"driver/btrfs": {"bytes_per_second": GiB}})
    assert model.seconds(4 * GiB, 10, "driver", "btrfs") == 1.0 + 4
    assert model.seconds(4 * GiB, 10, "driver", "posix") == 1.0          # the default rename
    assert model.seconds(0, 1000, "host") == 5.0 + 2.0
