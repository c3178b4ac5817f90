#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: share_info
short_description: List shares with their instances, status, task_state and progress
version_added: 0.1.0
description:
  - Reads the records kept in every declared pool and returns the shares, optionally only one
    share or only the shares of one pool. Changes nothing.
  - During a migration a share has two instances, the source (V(migrating)) and the destination
    (V(migrating_to)); C(migration) says where it goes, how, since when, and why a driver-assisted
    move was refused when it was.
  - With a backend of driver V(manila) the shares come from OpenStack Manila (the project's shares, or the
    one named); each has its C(task_state), the migration's C(total_progress) from Manila's progress call,
    its instances, its access rules and, for a replicated share, its C(replicas).
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.attributes, storage.mobility.attributes.info_module]
options:
  name:
    description: Only the share with this name.
    type: str
  pool:
    description: Only the shares whose active instance is in this pool, V(host@backend#pool).
    type: str
'''

EXAMPLES = r'''
# mobility_backends: declared once in inventory variables, as the examples of storage.mobility.share show.
- name: Shares of mobility_backends
  module_defaults: {group/storage.mobility.mobility: {backends: "{{ mobility_backends }}"}}
  block:
    - name: Watch a migration
      storage.mobility.share_info:
        name: projects
      register: info

    - name: Show its progress
      ansible.builtin.debug:
        msg: "{{ info.shares[0].host }}: task_state {{ info.shares[0].task_state }}, {{ info.shares[0].total_progress }}% done"

    - name: Every share of one pool
      storage.mobility.share_info:
        pool: stor1@generic1#alpha
      register: in_alpha
'''

RETURN = r'''
shares:
  description: The shares found, each with its record and computed fields.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the share.
      type: str
      sample: projects
    host:
      description: Pool of the active instance, V(host@backend#pool).
      type: str
      sample: stor1@generic1#alpha
    status:
      description: Status of the share (the status of its active instance).
      type: str
      sample: available
    task_state:
      description: The migration task state, as in the reference, or null.
      type: str
      sample: migration_driver_phase1_done
    total_progress:
      description: Progress of the current task, 0 to 100, or null without a task.
      type: int
      sample: 100
    instances:
      description: The share instances with their pool and status.
      type: list
      elements: dict
      sample: [{pool: stor1@generic1#alpha, status: migrating, role: active}]
    export_location:
      description: Where users reach the share.
      type: str
      sample: /srv/exports/projects
    migration:
      description:
        - The last migration of the share, with its mechanism, timings, error and driver refusal.
        - Host-assisted, C(read_only_at) and C(read_only_seconds) - the read-only window, from the point the source
          became read-only (the start of phase 1, or of phase 2 for a writable copy) to the switch, or so far while
          it is read-only; a writable copy also has C(increments) (how much each rerun of phase 1 copied).
      type: dict
      sample: {destination_pool: stor1@generic1#beta, mechanism: driver, driver_refusal: null}
    cleanup_pending:
      description:
        - What a failed, cancelled or completed migration left to delete and could not delete yet (a
          full pool, an I/O error) - the destination or old instance, or a driver's temporary copies - each
          with its pool, reason, error and attempts. Every later run on the share retries it; the share
          itself is usable meanwhile.
      type: list
      elements: dict
      sample: [{kind: instance, pool: stor1@generic1#alpha, reason: old instance after migration 3c1d..., attempts: 1,
                error: "Failed to delete share in place: rm exited with 1"}]
    replicas:
      description:
        - For a share with a C(replication_type) and replicas - each with pool, status and C(replica_state).
        - On posix and btrfs also C(last_sync), C(lag_seconds), C(rpo_seconds), C(past_rpo) and C(last_update)
          (C(bytes), C(files), C(seconds) of the last update), and C(snapshots) (the share's snapshots a
          secondary holds).
      type: list
      elements: dict
      sample: [{id: 5c1f..., pool: devhost@beta#fake_pool_for_BETA, status: available, replica_state: in_sync,
                lag_seconds: 40.2, past_rpo: false}]
  sample: []
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import share_info


def serve(ctx, params):
    """The shares the serving implementations know."""
    return share_info(ctx, params['name'], params['pool'])


def main():
    run_module(mobility_module(dict(name=dict(type='str'), pool=dict(type='str'))), serve)


if __name__ == '__main__':
    main()
