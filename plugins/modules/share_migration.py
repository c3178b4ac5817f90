#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: share_migration
short_description: Migrate a share to another pool in two phases
version_added: 0.1.0
description:
  - Moves a share to another pool the way the reference service does, with the same
    C(task_state) values, validation order and transitions.
  - V(started) runs phase 1 while users keep access. A driver-assisted migration is tried first;
    when the driver cannot move the share and all four flags are false (and the share has no
    snapshots), a host-assisted copy is used (with O(writable) alone, a writable one, see O(writable)).
    The source is then read-only, a destination instance
    is created and the module returns a C(copy_plan) for the P(storage.mobility.data_mover#role) role,
    which copies and verifies on a data node. Calling V(started) again with O(copy_report) set to
    the role's verified report moves the share to V(data_copying_completed). The playbooks
    C(storage.mobility.migrate_share), C(complete_share_migration) and C(cancel_share_migration)
    sequence all of this.
  - V(completed) is phase 2, the switchover, for a maintenance window; it is never started
    automatically. Users then reach the share at the same export path, served from the destination,
    and the source instance is deleted. For a host-assisted migration the first call returns a
    C(copy_plan) for a final pass (a last sync and a second verification); the call with that pass's
    verified O(copy_report) switches. The source is never deleted before that.
  - V(cancelled) rolls phase 1 back; the share is left as it was, with its access rules.
  - V(reset) sets C(task_state) by hand, as an administrator does to recover a stuck share.
  - Every state is idempotent and resumable. A rerun of V(started) attaches to the running phase 1,
    a rerun of V(completed) after a crash finishes the switchover, a rerun of V(cancelled) finishes
    the cancel.
  - The posix driver moves a share driver-assisted only between pools on one filesystem, by an
    atomic rename that keeps everything (hard links, xattrs, ACLs, sparse files, snapshots) and
    keeps the share writable.
  - The btrfs driver moves a share between btrfs pools with C(btrfs send | btrfs receive), writable,
    with its metadata and snapshots. Phase 1 sends the snapshots and the share; each later run of
    V(started) sends an increment of what changed. Phase 2 makes the source read-only (it stops
    while a process still holds a file of the share open for writing), sends the last increment and
    switches the export. See C(docs/btrfs.md).
  - With the V(bind) export helper the export path never accepts a write that does not end up in
    the share, not even during the switch. The share's bind mount sits on a read-only base, so
    between unmounting the source and mounting the destination a write through the export fails.
  - With a backend of driver V(manila) the share migrates through OpenStack Manila's own migration API,
    to a pool as Manila names it (V(host@backend#pool)). V(started) sends C(migration_start) with the flags
    and waits (with O(wait)) until V(migration_driver_phase1_done) or V(data_copying_completed), recording
    C(total_progress) on the way; V(completed), V(cancelled) and V(reset) call C(migration_complete),
    C(migration_cancel) and the administrator's C(reset_task_state). O(new_share_type) and
    O(new_share_network) name a Manila share type and share network (name or id). The microversion is
    picked per call, with Manila's experimental header below 2.96. O(copy_job) and O(copy_report) do not
    apply; Manila's data service copies host-assisted migrations itself. See C(docs/openstack.md).
requirements:
  - Host-assisted migrations copy on a data node (the C(storage.mobility.data_mover) role), which needs what
    M(storage.mobility.data_copy) needs
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.wait, storage.mobility.attributes, storage.mobility.attributes.state_module]
options:
  share:
    description: Name of the share to migrate (at most 250 bytes, see M(storage.mobility.share)).
    type: str
    required: true
  state:
    description:
      - V(started) runs phase 1, V(completed) phase 2 (the switchover), V(cancelled) rolls phase 1 back and
        V(reset) sets O(task_state) by hand; the description says what each does.
    type: str
    choices: [started, completed, cancelled, reset]
    default: started
  destination_pool:
    description:
      - Destination pool, V(host@backend#pool). Required with O(state=started); with
        O(state=completed) it is checked against the running migration.
    type: str
  writable:
    description:
      - The source must stay writable during phase 1.
      - A driver that can move the share must keep it writable (driver-assisted; otherwise V(migration_error)).
      - When the driver cannot move the share at all (posix pools on different filesystems) and no other flag
        is set, the migration is host-assisted in a writable mode (beyond the reference, which allows a host copy
        only without flags). Phase 1 leaves the source's export writable while a data node copies and verifies
        (a verification that users' writes outran keeps the copy, unverified); each later run of V(started) in
        V(data_copying_completed) sends an increment of what changed (C(increment) in the result,
        C(migration.increments) in the record). V(completed) makes the source read-only first
        (C(migration.read_only_at)), then looks for open writers, runs the final pass and its verification and
        switches; the read-only window is C(migration.read_only_seconds). See C(docs/share_migration.md).
      - V(false) keeps the reference's host-assisted behaviour (the source read-only from the start of phase 1).
        Cannot be combined with O(force_host_assisted_migration).
    type: bool
    default: false
  preserve_metadata:
    description: File metadata must be preserved by the driver.
    type: bool
    default: false
  preserve_snapshots:
    description: The share's snapshots must move with it.
    type: bool
    default: false
  nondisruptive:
    description: Clients must not be disrupted by the switchover.
    type: bool
    default: false
  force_host_assisted_migration:
    description: Skip the driver and copy through a data node. Cannot be combined with the four flags above.
    type: bool
    default: false
  new_share_type:
    description: Share type the share takes at the destination; the destination pool must satisfy it.
    type: dict
    suboptions:
      name:
        description: Name of the share type.
        type: str
        required: true
      extra_specs:
        description: Its extra specs.
        type: dict
  new_share_network:
    description: Share network at the destination. The collection's own drivers (posix, btrfs) have no share networks and refuse it.
    type: str
  copy_job:
    description:
      - With O(state=started) on a host-assisted migration, the copy job a data node is running
        (C(data_node), C(job_id), C(status_file)); moves V(data_copying_starting) to
        V(data_copying_in_progress). When C(status_file) is readable on this machine,
        M(storage.mobility.share_info) shows the copy's live progress.
      - With the same job again and a C(progress) key (C(state), C(phase) and the job's C(progress) as
        M(storage.mobility.data_copy) returns them), the figures are kept in the record as
        C(migration.reported_progress) (with C(reported_at)), without a history entry or a change, and
        M(storage.mobility.share_info) shows them when the status file is on another machine. The phase
        playbooks do this at the first progress line, then at most every C(mobility_progress_record_seconds).
    type: dict
  copy_report:
    description:
      - The report of the P(storage.mobility.data_mover#role) role for this migration. With
        O(state=started) it ends phase 1, with O(state=completed) it is the final pass.
      - A report whose C(job_id) does not belong to this migration, or that is not verified, never
        completes anything; an unverified phase-1 report ends in V(data_copying_error) with the
        destination removed and the source available, untouched.
      - A verified report must carry the C(signature) that M(storage.mobility.data_copy) makes with the
        C(report_signing) of the copy plan this migration handed out for the pass it waits for; a report
        made by hand, edited after signing, or of another migration or an earlier pass is refused with the
        reason, and nothing changes. A report that claims no success needs no signature.
      - Before switching, both instances are sealed again and compared with the seals of the verified
        final report; when either changed since, nothing is switched and a new C(copy_plan) for a final
        pass is returned, with C(msg) naming the instance that changed.
    type: dict
  open_writers_wait:
    description:
      - With O(state=completed), how many seconds phase 2 waits for processes that hold files of the
        source open for writing (or mapped shared and writable) to close them; V(0) refuses at once.
      - Processes are found through any path into the source (its path in the pool, its export) and
        named in the error (pid, command, files). Host-assisted, they are looked for before the final
        pass is handed out and again immediately before the switch; with the btrfs driver, after the
        source became read-only and before its last send.
      - A refusal switches nothing; the share goes back to the state phase 2 started from with its
        source intact, and completing again (or cancelling) works from there. A writer seen after the
        final pass of a host-assisted migration may have changed the source after it was read, so a
        new final pass is asked for (a new pass of job C(<id>-final)) even when it closed while waiting.
      - Not used with backends of driver V(manila).
    type: int
    default: 0
  task_state:
    description:
      - With O(state=reset), the value to set, or V(none) to clear it. Every C(task_state) except
        V(migration_driver_starting) and V(migration_cancel_in_progress).
    type: str
    choices: [none, migration_starting, migration_in_progress, migration_completing, migration_success,
              migration_error, migration_cancelled, migration_driver_in_progress,
              migration_driver_phase1_done, data_copying_starting, data_copying_in_progress,
              data_copying_completing, data_copying_completed, data_copying_cancelled, data_copying_error]
notes:
  - Validation follows the reference in this order, and a refused request changes nothing
    - C(force_host_assisted_migration) with any flag; the share has replicas; its instance is not
    available; it is busy with another task; host-assisted with snapshots; unknown destination pool;
    destination equal to the current pool.
  - A rerun of a completed migration to the same pool reports no change. A new request whose
    destination is the share's current pool is refused as having nothing to migrate.
  - Beyond the reference, V(cancelled) is also accepted in V(migration_starting),
    V(migration_driver_starting) and V(data_copying_starting), the states a run that died while
    starting leaves behind.
'''

EXAMPLES = r'''
# mobility_backends holds the pools stor1@generic1#alpha and #beta (see the examples of storage.mobility.share).
- name: Move a share of mobility_backends to another pool
  module_defaults: {group/storage.mobility.mobility: {backends: "{{ mobility_backends }}"}}
  block:
    - name: Phase 1 - move the share while users keep working
      storage.mobility.share_migration:
        share: projects
        destination_pool: stor1@generic1#beta
        writable: true
        preserve_snapshots: true

    - name: Phase 2 - switch over in the maintenance window
      storage.mobility.share_migration:
        share: projects
        state: completed

    - name: Move it back, but roll phase 1 back instead of completing it
      storage.mobility.share_migration:
        share: projects
        destination_pool: stor1@generic1#alpha

    - name: Roll phase 1 back
      storage.mobility.share_migration:
        share: projects
        state: cancelled

    - name: Recover a share stuck in a task by hand
      storage.mobility.share_migration:
        share: projects
        state: reset
        task_state: migration_error
'''

RETURN = r'''
task_state:
  description: The share's task_state after the run.
  returned: always
  type: str
  sample: migration_driver_phase1_done
total_progress:
  description: Progress of the migration, 0 to 100.
  returned: always
  type: int
  sample: 100
migration:
  description:
  - The migration record - id, pools, mechanism, requested flags, driver compatibility,
    driver refusal, error, timings (C(switchover_seconds) after phase 2; host-assisted, C(read_only_at) and
    C(read_only_seconds), the read-only window from that point to the switch, or so far while the source is
    read-only), and for a writable host copy C(increments) and C(increment_count).
  - With the btrfs driver, C(btrfs.data_path) (V(direct), V(controller) or V(same host)) and C(btrfs.route)
    say which way the data went between two storage hosts (O(backends[].data_path), docs/hosts.md).
  returned: always
  type: dict
  sample: {id: 3c1d..., source_pool: stor1@generic1#alpha, destination_pool: stor1@generic1#beta, mechanism: driver}
share:
  description: The share after the run (in check mode, as it would be).
  returned: always
  type: dict
  sample: {name: projects, host: stor1@generic1#beta, status: available, task_state: migration_success}
actions:
  description: The steps of the migration the run took, or would take in check mode.
  returned: always
  type: list
  elements: str
  sample: ["switch share projects from stor1@generic1#alpha to stor1@generic1#beta"]
progress:
  description: Manila only - the C(task_state) and C(total_progress) seen while waiting for phase 1, one entry per change.
  returned: when the module waited for phase 1 of a migration in Manila
  type: list
  elements: dict
  sample: [{task_state: migration_driver_in_progress, total_progress: 50}, {task_state: migration_driver_phase1_done, total_progress: 100}]
increment:
  description:
    - A writable host copy (O(writable)) - the increment whose report this run took, with how much changed since
      the pass before (C(files) and C(bytes) rsync transferred, C(deleted), C(created)), its C(number), C(copy_seconds)
      and whether it was C(verified).
  returned: when the run took the report of an increment
  type: dict
  sample: {number: 1, files: 120, bytes: 5242880, deleted: 0, created: 120, copy_seconds: 1.2, verified: true}
copy_required:
  description: True when a data node must copy before the migration can go on (host-assisted).
  returned: when a copy plan is returned
  type: bool
  sample: true
copy_plan:
  description:
    - What the data mover must do - the job id bound to this migration, both trees, the ignore
      list, verification settings, and whether this is the final pass.
    - C(report_signing) - the migration id, the id of this pass and its key, for the
      C(report_signing) option of M(storage.mobility.data_copy); each plan of phase 1 and each
      final pass has a pass of its own. The key binds the report to the pass; it is not a secret
      against whoever reads this result or the migration records.
  returned: when copy_required is true
  type: dict
  sample: {job_id: 3c1d..., final_pass: false, source: {helper: local, export: /srv/pools/alpha/shares/projects, read_only: true},
           report_signing: {migration_id: 3c1d..., pass_id: 9b0e..., key: 5f2a...}}
msg:
  description:
    - What the run found when it did not do what was asked - the migration already completed, nothing
      to cancel, or why nothing was switched although the final pass had been verified (an instance
      changed since; a new final pass is then asked for).
  returned: when there is such a note
  type: str
  sample: "Not switching share projects: the destination instance changed since the final pass verified it (...)"
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import service
from ansible_collections.storage.mobility.plugins.module_utils.states import RESETTABLE_TASK_STATES


def serve(ctx, params):
    """Bring the migration to its state, through the state machine that serves the share."""
    return service(ctx, 'share_migration', pool=params['destination_pool'], share=params['share']).run(params)


def main():
    run_module(mobility_module(dict(
        share=dict(type='str', required=True),
        destination_pool=dict(type='str'),
        writable=dict(type='bool', default=False),
        preserve_metadata=dict(type='bool', default=False),
        preserve_snapshots=dict(type='bool', default=False),
        nondisruptive=dict(type='bool', default=False),
        force_host_assisted_migration=dict(type='bool', default=False),
        new_share_type=dict(type='dict', options=dict(name=dict(type='str', required=True),
                                                      extra_specs=dict(type='dict'))),
        new_share_network=dict(type='str'),
        task_state=dict(type='str', choices=['none'] + list(RESETTABLE_TASK_STATES)),
        copy_job=dict(type='dict'),
        copy_report=dict(type='dict'),
        open_writers_wait=dict(type='int', default=0),
    ), wait=True, states=('started', 'completed', 'cancelled', 'reset'),
        required_if=[('state', 'started', ['destination_pool']), ('state', 'reset', ['task_state'])]), serve)


if __name__ == '__main__':
    main()
