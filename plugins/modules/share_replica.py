#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: share_replica
short_description: Add, promote, resync and delete share replicas
version_added: 0.1.0
description:
  - Manages the replicas of a share whose share type has a C(replication_type) (V(readable),
    V(writable) or V(dr)), the way the reference service does, through OpenStack Manila (a backend with
    driver V(manila)) or on the collection's own drivers V(posix) and V(btrfs).
  - On V(posix) and V(btrfs) (see docs/replication.md) a replica lives in another pool whose backend has the
    same C(replication_domain) and driver; only V(readable) and V(dr) are served (V(writable) needs synchronous
    mirroring and is refused). Updates run in the module - btrfs sends read-only snapshots incrementally, posix
    runs the data mover's rsync until a pass finds the active tree unchanged - so V(present) and V(resynced)
    return with the replica updated. A readable replica is exported read-only under C(<share>.replica-<pool>), a
    dr replica is not exported. With O(force), V(promoted) also works while the active replica's pool is
    unreachable; the old active is fenced (read-only on btrfs, not exported) when it comes back.
  - V(present) adds a replica (in O(pool) when given) and waits until it is V(in_sync); with O(status) or
    O(replica_state) it resets them on an existing replica, as an administrator does to recover by hand.
  - V(promoted) makes the replica the active one and waits until it is; the old active replica becomes a
    secondary. Promoting the active replica changes nothing.
  - V(resynced) brings a secondary replica up to date with the active one and waits until it is V(in_sync).
  - V(absent) deletes a replica; deleting one that is gone changes nothing.
  - Refused before anything is sent, with the reason - a share without C(replication_type); deleting the
    last active replica; promoting an V(out_of_sync) or V(error) replica without O(force); resetting the
    C(replica_state) of the active replica; resyncing the active replica.
  - Manila only - the microversion is picked per call (Manila's experimental header below 2.56); features the cloud
    is too old for (O(quiesce_wait_time) before 2.75, O(pool) before 2.67) fail with a clear error.
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.wait, storage.mobility.attributes, storage.mobility.attributes.state_module]
options:
  share:
    description:
      - Name (or id) of the share in Manila. Its share type must have a C(replication_type).
    type: str
    required: true
  state:
    description:
      - V(present) adds the replica (or resets its status), V(promoted) makes it the active replica,
        V(resynced) brings it up to date and V(absent) deletes it; the description says how.
    type: str
    choices: [present, absent, promoted, resynced]
    default: present
  pool:
    description:
      - The pool of the replica, V(host@backend#pool) as Manila names it. With O(state=present) the new
        replica is created there (Manila's scheduler hint C(only_host), microversion 2.67); without it
        V(present) is satisfied by any secondary replica.
      - O(state=promoted), V(resynced) and V(absent) need O(pool) or O(replica_id).
    type: str
  replica_id:
    description: The id of the replica, instead of O(pool).
    type: str
  availability_zone:
    description: Availability zone of a new replica (Manila only).
    type: str
  force:
    description:
      - With O(state=promoted), promote a replica that is V(out_of_sync) or V(error), accepting the loss of
        what it misses (administrator intent).
      - With O(state=absent), force-delete the replica whatever its status (posix, btrfs - also one whose pool is
        unreachable - it is forgotten and its data stays there).
      - With O(state=promoted) on posix and btrfs, promote although the active replica's pool is unreachable,
        accepting the loss of what was written there after the replica's C(last_sync).
      - With O(state=resynced) on posix and btrfs, replace what an old active replica got after its last replicated
        point (named in the refusal without O(force); kept in a snapshot either way). Manila refuses it.
    type: bool
    default: false
  quiesce_wait_time:
    description:
      - With O(state=promoted), seconds the driver waits for the active replica to quiesce before it
        promotes. Needs microversion 2.75. Manila only (posix and btrfs make the active read-only instead).
    type: int
  status:
    description:
      - With O(state=present), reset the C(status) of the existing replica to this value (administrator).
    type: str
    choices: [available, error, creating, deleting, error_deleting]
  replica_state:
    description:
      - With O(state=present), reset the C(replica_state) of the existing replica to this value
        (administrator). Never on the active replica.
    type: str
    choices: [active, in_sync, out_of_sync, error]
notes:
  - On posix and btrfs the share type's extra spec C(rpo_seconds) turns a replica V(out_of_sync) once its
    C(lag_seconds) passes it (recorded by the next run on the share); playbook C(storage.mobility.update_replicas)
    updates every replica of a backend from cron or a timer.
  - New replicas start V(out_of_sync) until Manila's periodic update (C(replica_state_update_interval),
    300 seconds by default) finds them V(in_sync); set O(wait_timeout) accordingly, or O(wait=false).
seealso:
  - module: storage.mobility.share
  - module: storage.mobility.share_info
'''

EXAMPLES = r'''
# Replicas need OpenStack Manila: a backend with driver manila (cloud names a cloud in clouds.yaml), here passed directly.
- name: Replicas of a share in OpenStack Manila
  module_defaults: {group/storage.mobility.mobility: {backends: [{name: manila, driver: manila, cloud: devstack-admin}]}}
  block:
    - name: Add a replica in another backend of the same replication domain
      storage.mobility.share_replica:
        share: projects
        pool: devhost@beta#pool1

    - name: Fail over to it
      storage.mobility.share_replica:
        share: projects
        pool: devhost@beta#pool1
        state: promoted
        quiesce_wait_time: 30

    - name: Bring the old active replica up to date
      storage.mobility.share_replica:
        share: projects
        pool: devhost@alpha#pool1
        state: resynced

    - name: Recover a replica stuck in error by hand
      storage.mobility.share_replica:
        share: projects
        pool: devhost@alpha#pool1
        status: available
        replica_state: out_of_sync

    - name: Delete it
      storage.mobility.share_replica:
        share: projects
        pool: devhost@alpha#pool1
        state: absent

# On the collection's own drivers: two pools of backends in one replication_domain.
- name: Replicas of a share on btrfs pools
  module_defaults: {group/storage.mobility.mobility: {backends: "{{ mobility_backends }}"}}
  block:
    - name: Add a read-only replica in another pool (its first update runs now)
      storage.mobility.share_replica:
        share: projects
        pool: stor2@bt2#beta

    - name: The active pool is gone - promote the replica, accepting what it misses
      storage.mobility.share_replica:
        share: projects
        pool: stor2@bt2#beta
        state: promoted
        force: true

    - name: Fail back later - the old active becomes a copy of the new one (refused while it holds writes of its own)
      storage.mobility.share_replica:
        share: projects
        pool: stor1@bt1#alpha
        state: resynced
'''

RETURN = r'''
replica:
  description:
    - The replica after the run (in check mode, as it would be); empty when deleted.
    - On posix and btrfs also C(last_sync) (the time of the point it holds), C(lag_seconds), C(rpo_seconds),
      C(past_rpo), C(last_update) (C(bytes), C(files), C(seconds), C(verified), C(incremental), and
      C(full_send_reason) when an update had to copy the whole share - btrfs a full send, posix a walk of
      both whole trees instead of the entries changed since the last update), C(export_location),
      and after a forced promotion C(fence_pending), C(fenced_at), C(fence_error) (why the last fence failed),
      C(fence_lifted_at) (when a failback lifted the fence to update it), C(kept_divergence).
      C(snapshots) names the share's snapshots a secondary holds (its last update carried them).
  returned: always
  type: dict
  sample: {id: 5c1f..., share_id: 0f0e..., pool: devhost@beta#pool1, status: available, replica_state: in_sync,
           last_sync: "2026-12-01T23:25:57.468137Z", lag_seconds: 12.5, last_update: {bytes: 4096, files: 1, seconds: 0.2}}
replicas:
  description: All replicas of the share after the run (not listed in check mode when something would change).
  returned: always
  type: list
  elements: dict
  sample: [{id: 5c1f..., pool: devhost@beta#pool1, status: available, replica_state: active}]
share:
  description: The share - name, id and C(replication_type).
  returned: always
  type: dict
  sample: {name: projects, id: 0f0e..., replication_type: readable}
actions:
  description: What the run did to the replica, or would do in check mode.
  returned: always
  type: list
  elements: str
  sample: ["promote replica 5c1f... of share projects in devhost@beta#pool1"]
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.manila.replicas import (
    REPLICA_STATUSES, RESETTABLE_REPLICA_STATES)
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import service


def serve(ctx, params):
    """Bring the replica to its state (Manila, or the collection's own posix and btrfs drivers)."""
    return service(ctx, 'replica', pool=params['pool']).run(params)


def main():
    run_module(mobility_module(dict(
        share=dict(type='str', required=True),
        force=dict(type='bool', default=False),
        pool=dict(type='str'),
        replica_id=dict(type='str'),
        availability_zone=dict(type='str'),
        quiesce_wait_time=dict(type='int'),
        status=dict(type='str', choices=list(REPLICA_STATUSES)),
        replica_state=dict(type='str', choices=list(RESETTABLE_REPLICA_STATES)),
    ), wait=True, states=('present', 'absent', 'promoted', 'resynced'), mutually_exclusive=[('pool', 'replica_id')]), serve)


if __name__ == '__main__':
    main()
