"""An in-memory stand-in for ManilaAPI (plugins/module_utils/manila/api.py) for the manager tests.

It keeps shares, instances and replicas as Manila returns them, records every call that would
change something in ``calls``, and refuses features above ``max_version`` the way OpenStackClient
does. Manila itself is exercised by tests/integration/openstack/test_manila.py.
"""

from __future__ import annotations

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.openstack import format_version, parse_version
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits

ALPHA = "devhost@alpha#p1"
BETA = "devhost@beta#p1"
GAMMA = "devhost@gamma#p1"


class FakeClient:
    def __init__(self, max_version="2.99"):
        self.max = parse_version(max_version)

    def max_version(self):
        return self.max

    def supports(self, minimum):
        return self.max >= parse_version(minimum)

    def microversion(self, feature, minimum, maximum=None):
        if self.max < parse_version(minimum):
            raise InvalidRequest("Manila of backend lab speaks API microversion %s at most; %s needs %s or newer"
                                 % (format_version(self.max), feature, minimum))
        return format_version(self.max)


class Ctx:
    def __init__(self, check_mode=False, **waits):
        self.check_mode = check_mode
        self.waits = Waits(**waits)


class Backend:
    name = "lab"
    driver = "manila"


class FakeAPI:
    def __init__(self, max_version="2.99"):
        self.client = FakeClient(max_version)
        self.backend = Backend()
        self.shares_by_id = {}
        self.instances_by_share = {}
        self.replicas_by_id = {}
        self.rules = {}
        self.calls = []
        self.pool_names = [ALPHA, BETA, GAMMA]
        self.progress = []

    # ---------------------------------------------------------------- setup helpers
    def add_share(self, name, host=ALPHA, **fields):
        share = {"id": "id-" + name, "name": name, "host": host, "status": "available", "size": 1,
                 "share_proto": "NFS", "share_type": "t-default", "share_type_name": "default",
                 "task_state": None, "replication_type": None, "has_replicas": False, "metadata": {}}
        share.update(fields)
        self.shares_by_id[share["id"]] = share
        self.instances_by_share[share["id"]] = [{"id": "inst-" + name, "host": host, "status": "available"}]
        return share

    def add_replica(self, share, host, replica_state, status="available"):
        replica = {"id": "rep-%s-%s" % (share["name"], host.split("@")[1].split("#")[0]), "share_id": share["id"],
                   "host": host, "status": status, "replica_state": replica_state}
        self.replicas_by_id[replica["id"]] = replica
        share["has_replicas"] = len([r for r in self.replicas_by_id.values() if r["share_id"] == share["id"]]) > 1
        return replica

    # ---------------------------------------------------------------- reads
    def supports(self, minimum):
        return self.client.supports(minimum)

    def shares(self, name=None, host=None):
        return [dict(s) for s in self.shares_by_id.values()
                if (name is None or s["name"] == name) and (host is None or s["host"] == host)]

    def share(self, share_id):
        share = self.shares_by_id.get(share_id)
        return dict(share) if share else None

    def find_share(self, ref):
        found = self.shares(name=ref)
        return found[0] if found else None

    def require_share(self, ref):
        share = self.find_share(ref)
        if share is None:
            raise NotFound("Unknown share %r" % ref)
        return share

    def export_locations(self, share):
        return [{"path": "10.0.0.10:/x/" + share["name"], "preferred": True, "is_admin_only": False}]

    def access_rules(self, share):
        return [dict(r) for r in self.rules.get(share["id"], [])]

    def instances(self, share):
        return [dict(i) for i in self.instances_by_share.get(share["id"], [])]

    def share_type(self, ref):
        if ref in ("default", "replicated"):
            return {"id": "t-" + ref, "name": ref}
        raise NotFound("Unknown share type %r" % ref)

    def share_network(self, ref):
        raise NotFound("Unknown share network %r" % ref)

    def pools(self):
        return list(self.pool_names)

    def services(self):
        return [{"host": "devhost@alpha"}, {"host": "devhost@beta"}, {"host": "devhost@gamma"}]

    def migration_progress(self, share):
        return {"task_state": share["task_state"], "total_progress": 50}

    def replicas(self, share):
        self.client.microversion("share replication", "2.11")
        return [dict(r) for r in self.replicas_by_id.values() if r["share_id"] == share["id"]]

    def replica(self, replica_id):
        replica = self.replicas_by_id.get(replica_id)
        return dict(replica) if replica else None

    # ---------------------------------------------------------------- changes (recorded; some take effect)
    def migration_start(self, share, body):
        self.calls.append(("migration_start", share["name"], body))
        stored = self.shares_by_id[share["id"]]
        stored["task_state"] = "migration_driver_phase1_done"
        self.instances_by_share[share["id"]] = [
            {"id": "inst-src", "host": share["host"], "status": "migrating"},
            {"id": "inst-dst", "host": body["host"], "status": "migrating_to"}]

    def migration_complete(self, share):
        self.calls.append(("migration_complete", share["name"]))
        stored = self.shares_by_id[share["id"]]
        destination = [i for i in self.instances_by_share[share["id"]] if i["status"] == "migrating_to"][0]["host"]
        stored.update(task_state="migration_success", host=destination)
        self.instances_by_share[share["id"]] = [{"id": "inst-dst", "host": destination, "status": "available"}]

    def migration_cancel(self, share):
        self.calls.append(("migration_cancel", share["name"]))
        stored = self.shares_by_id[share["id"]]
        stored["task_state"] = "migration_cancelled"
        self.instances_by_share[share["id"]] = [{"id": "inst-src", "host": share["host"], "status": "available"}]

    def reset_task_state(self, share, task_state):
        self.calls.append(("reset_task_state", share["name"], task_state))
        self.shares_by_id[share["id"]]["task_state"] = task_state

    def create_replica(self, share, host=None, availability_zone=None):
        if host:
            self.client.microversion("creating a replica in a given pool (scheduler hint only_host)", "2.67")
        self.calls.append(("create_replica", share["name"], host))
        return self.add_replica(self.shares_by_id[share["id"]], host or GAMMA, "in_sync")

    def promote_replica(self, replica, quiesce_wait_time=None):
        self.calls.append(("promote_replica", replica["id"], quiesce_wait_time))
        for other in self.replicas_by_id.values():
            if other["share_id"] == replica["share_id"]:
                other["replica_state"] = "active" if other["id"] == replica["id"] else "in_sync"

    def resync_replica(self, replica):
        self.calls.append(("resync_replica", replica["id"]))
        self.replicas_by_id[replica["id"]]["replica_state"] = "in_sync"

    def reset_replica_status(self, replica, status):
        self.calls.append(("reset_replica_status", replica["id"], status))
        self.replicas_by_id[replica["id"]]["status"] = status

    def reset_replica_state(self, replica, replica_state):
        self.calls.append(("reset_replica_state", replica["id"], replica_state))
        self.replicas_by_id[replica["id"]]["replica_state"] = replica_state

    def delete_replica(self, replica, force=False):
        self.calls.append(("delete_replica", replica["id"], force))
        self.replicas_by_id.pop(replica["id"], None)

    def create_share(self, body, only_host=None):
        self.calls.append(("create_share", body["name"], only_host))
        return self.add_share(body["name"], host=only_host or ALPHA, size=body["size"])

    def delete_share(self, share):
        self.calls.append(("delete_share", share["name"]))
        self.shares_by_id.pop(share["id"], None)

    def resize(self, share, new_size):
        self.calls.append(("resize", share["name"], new_size))
        self.shares_by_id[share["id"]]["size"] = new_size

    def update_share(self, share, fields):
        self.calls.append(("update_share", share["name"], fields))
        self.shares_by_id[share["id"]]["description"] = fields.get("display_description")

    def set_metadata(self, share, metadata):
        self.calls.append(("set_metadata", share["name"], metadata))
        self.shares_by_id[share["id"]]["metadata"].update(metadata)

    def allow_access(self, share, rule):
        self.calls.append(("allow_access", share["name"], rule["access_to"], rule["access_level"]))
        rules = self.rules.setdefault(share["id"], [])
        rules.append(dict(rule, id="rule-%d" % len(self.calls), state="active"))

    def deny_access(self, share, rule):
        self.calls.append(("deny_access", share["name"], rule["access_to"]))
        self.rules[share["id"]] = [r for r in self.rules.get(share["id"], []) if r["id"] != rule["id"]]
