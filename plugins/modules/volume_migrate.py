#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: volume_migrate
short_description: Migrate or retype a block volume (OpenStack Cinder or driver file)
version_added: 0.1.0
description:
  - Moves a Cinder volume (a backend with driver V(cinder)) to another pool or cluster with Cinder's
    own migration, or changes its volume type with a retype that may move it.
  - With O(host) (V(host@backend#pool), or V(host@backend) for any pool of a backend) or O(cluster)
    the volume migrates there. Cinder first asks the source driver to move it (driver-assisted);
    when the driver cannot, or with O(force_host_copy), it creates a volume at the destination, copies
    the blocks on the volume service's host and swaps the two, so the volume keeps its id (its
    C(name_id) then names the copy).
  - With O(wait) the module follows C(migration_status) through V(starting), V(migrating),
    V(completing) to V(success), and fails with Cinder's reason when it ends in V(error). The statuses
    seen, with the seconds at which they were seen, are returned in C(migration.history); Cinder gives
    no percentage for a migration.
  - With O(new_type) the volume is retyped; O(migration_policy=on-demand) lets Cinder migrate it
    when the new type needs another backend, V(never) (Cinder's default) refuses such a retype. Under
    V(never) a type that pins another backend (C(volume_backend_name)) is refused before anything is
    sent. Cinder refuses other retypes after accepting the request; the module then fails with the
    type the volume kept.
  - Idempotent - a volume already on the destination (or of the new type) is no change, and a run while
    a migration is running follows it instead of starting another.
  - Refused before anything is sent - O(host) with O(cluster); O(new_type) with O(host), O(cluster),
    O(force_host_copy) or O(lock_volume); O(migration_policy) without O(new_type); an unknown volume,
    destination or type; a volume that is neither V(available) nor V(in-use); O(cluster) when the
    cloud (or the backend's C(api_version)) is older than microversion 3.16.
  - On driver V(file) (docs/volumes.md) O(host) is a pool of a V(file) backend. Within one filesystem the
    image is renamed (V(driver), instant); otherwise, or with O(force_host_copy), C(qemu-img convert)
    copies it detached (holes kept, at most O(rate_limit) bytes per second), C(migration_status) goes
    V(starting), V(migrating), V(completing), V(success) (or V(error)), the copy is compared with the
    source (C(qemu-img compare)) before the volume moves, and the source is removed last. With
    O(wait=false) the module returns at once; M(storage.mobility.volume_info) and reruns report the
    progress (C(migration.progress)), and a rerun finishes a copy that ended or restarts one whose copier
    died. O(state=cancelled) stops a running copy; the source stays the volume, unchanged. Each step
    writes C(volume.migrate.start), C(volume.migrate.progress) (each poll) and C(volume.migrate.end) to
    the event journal. An attached (V(in-use)) volume, O(cluster) and O(new_type) are refused.
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.wait, storage.mobility.attributes, storage.mobility.attributes.state_module]
options:
  volume:
    description: Name (or id) of the volume.
    type: str
    required: true
  host:
    description:
      - Destination pool, V(host@backend#pool), or V(host@backend) for any pool of that backend, as
        Cinder names them (M(storage.mobility.volume_info) lists them as C(pools)).
    type: str
  cluster:
    description:
      - Destination cluster of volume services, instead of O(host). Needs microversion 3.16.
    type: str
  force_host_copy:
    description:
      - Skip the driver-assisted move and copy the data through the volume service's host.
    type: bool
    default: false
  lock_volume:
    description:
      - Keep the volume in status V(maintenance) during the migration, so that nothing attaches or
        detaches it meanwhile (for an V(available) volume).
    type: bool
    default: false
  new_type:
    description: Retype the volume to this volume type (name or id) instead of migrating it to a host.
    type: str
  migration_policy:
    description:
      - With O(new_type), whether Cinder may migrate the volume when the new type needs another backend.
      - When not set, V(never), as in Cinder.
    type: str
    choices: [never, on-demand]
  state:
    description:
      - V(migrated) starts (or follows) the migration; V(cancelled) (driver V(file) only) stops the running
        migration of O(volume), removing the partial copy. Cancelling when nothing runs is no change.
    type: str
    choices: [migrated, cancelled]
    default: migrated
  rate_limit:
    description:
      - Driver V(file) only - the most bytes of data per second a host copy reads (a QEMU throttle on the
        source, which does not count the holes skipped), or the speed of the pull job with O(async_migration).
    type: int
  async_migration:
    description:
      - Driver V(file) only, on the local host - migrate asynchronously (Cinder's C(migrating_attachable)) -
        a storage daemon serves the volume from the destination at once (a qcow2 image whose backing
        file is the source) while a block-stream job pulls the data in the background;
        C(migration_status) becomes V(migrating_attachable) within seconds whatever the size, and
        M(storage.mobility.volume) O(storage.mobility.volume#module:state=attached) attaches it on the
        destination meanwhile. The destination image is qcow2 (the volume's C(format) becomes V(qcow2)).
      - Not with O(lock_volume). See docs/volumes.md for what is verified before the source is released.
    type: bool
    default: false
notes:
  - Migrating and retyping are administrator operations in Cinder's default policy.
seealso:
  - module: storage.mobility.volume
  - module: storage.mobility.volume_info
'''

EXAMPLES = r'''
# Cinder volumes: a backend with driver cinder (cloud names a cloud in clouds.yaml), here passed directly.
- name: Move volumes in OpenStack Cinder
  hosts: localhost
  gather_facts: false
  module_defaults: {group/storage.mobility.mobility: {backends: [{name: cinder, driver: cinder, cloud: devstack-admin}]}}
  tasks:
    - name: Move a volume to another backend, letting the driver do it when it can
      storage.mobility.volume_migrate:
        volume: db-data
        host: devhost@file2#file2

    - name: Move it back with a copy through the volume service's host, locked meanwhile
      storage.mobility.volume_migrate:
        volume: db-data
        host: devhost@file1#file1
        force_host_copy: true
        lock_volume: true

    - name: Start a long migration and come back later
      storage.mobility.volume_migrate:
        volume: archive
        host: devhost@file2
        wait: false

    - name: Retype, moving the volume if the new type needs it
      storage.mobility.volume_migrate:
        volume: db-data
        new_type: fast
        migration_policy: on-demand

# Volumes of the collection's own file driver, declared in inventory variables, for example:
#   mobility_volume_backends:
#     - name: blocks
#       driver: file
#       pools: {fast: /srv/blocks/fast, slow: /srv/blocks/slow}
- name: Move a volume of the collection's own file driver
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ mobility_volume_backends }}"
  tasks:
    - name: A volume to move
      storage.mobility.volume:
        name: scratch
        size: 2
        pool: localhost@blocks#fast

    - name: Move it to pool slow (a rename when both pools are on one filesystem)
      storage.mobility.volume_migrate:
        volume: scratch
        host: localhost@blocks#slow

    - name: Copy it back through the host at 200 MB/s, and return at once
      storage.mobility.volume_migrate:
        volume: scratch
        host: localhost@blocks#fast
        force_host_copy: true
        rate_limit: 200000000
        wait: false

    - name: Its progress
      storage.mobility.volume_info:
        name: scratch
      register: info

    # A copy that ended before this read (an empty volume copies in an instant) has no progress:
    # its migration_status is success already.
    - name: Show it
      vars:
        volume: "{{ info.volumes[0] }}"
      ansible.builtin.debug:
        msg: >-
          {{ volume.migration_status }}{{ (', %s %% of %s bytes' | format(volume.migration.progress.percent,
          volume.migration.progress.bytes_total)) if volume.migration.progress is defined else '' }}

    - name: Stop it if it still runs; the volume then stays where it was
      storage.mobility.volume_migrate:
        volume: scratch
        state: cancelled
'''

RETURN = r'''
volume:
  description: The volume after the request (predicted in check mode); see M(storage.mobility.volume_info) for the fields.
  returned: always
  type: dict
  sample: {name: db-data, status: available, host: devhost@file2#file2, migration_status: success, name_id: null}
migration:
  description: The migration to O(host) or O(cluster).
  returned: when O(host) or O(cluster) is given, and for O(state=cancelled)
  type: dict
  contains:
    destination:
      description: O(host) or O(cluster) as given.
      type: str
      sample: devhost@file2#file2
    source:
      description: The pool the volume was on before.
      type: str
      sample: devhost@file1#file1
    mechanism:
      description:
        - How Cinder moved the volume - V(driver) (driver-assisted), V(async) (driver V(file), O(async_migration)) or V(host_copy) (a new volume, the
          blocks copied, the two swapped). Null when this run did not see it move.
      type: str
      sample: host_copy
    migration_status:
      description: The volume's C(migration_status) at the end.
      type: str
      sample: success
    history:
      description: The (C(status), C(migration_status)) pairs seen while waiting, with the seconds since the request.
      type: list
      elements: dict
      sample: [{status: available, migration_status: starting, seconds: 0.0},
               {status: available, migration_status: migrating, seconds: 1.0},
               {status: available, migration_status: success, seconds: 7.1}]
    seconds:
      description: Seconds from the request to the end of the wait.
      type: float
      sample: 7.1
    force_host_copy:
      description: O(force_host_copy) as given.
      type: bool
      sample: false
    progress:
      description:
        - Driver V(file), while a host copy or a pull runs - C(bytes_done), C(bytes_total), C(percent),
          C(rate_bytes_per_second), C(eta_seconds), C(seconds) and C(copier), read from the copier.
        - For a pull (O(async_migration)) the bytes are the source's data (its holes are not pulled) -
          C(bytes_total) the bytes outside the holes, C(bytes_done) those before the job's position.
      type: dict
      returned: when a migration runs
      sample: {bytes_done: 536870912, bytes_total: 4294967296, percent: 12.5, rate_bytes_per_second: 104857600,
               eta_seconds: 36, copier: running}
    result:
      description: Driver V(file) - V(success), V(error) or V(cancelled) once the migration ended, else null.
      type: str
      sample: success
    copy_seconds:
      description:
        - Driver V(file) - seconds of the host copy or of the pull, from its start (its restart after a crash)
          until a run saw it end (a run that waits sees it within 0.1 s).
      type: float
      returned: once the copy or the pull ended
      sample: 8.4
    verify_seconds:
      description: Driver V(file) - seconds of the verification of the copy or of the pull.
      type: float
      returned: once the verification passed
      sample: 1.2
  sample: {destination: devhost@file2#file2, mechanism: driver, migration_status: success}
retype:
  description: The retype to O(new_type).
  returned: when O(new_type) is given
  type: dict
  contains:
    new_type:
      description: Name of the new volume type.
      type: str
      sample: fast
    migration_policy:
      description: The migration policy used.
      type: str
      sample: on-demand
    moved:
      description: Whether the volume changed pool during this run's retype.
      type: bool
      sample: true
    migration_status:
      description: The C(migration_status) of the migration the retype needed, when it moved.
      type: str
      sample: success
    history:
      description: The (C(status), C(migration_status)) pairs seen while waiting.
      type: list
      elements: dict
      sample: [{status: retyping, migration_status: migrating, seconds: 0.5}]
    seconds:
      description: Seconds from the request to the end of the wait.
      type: float
      sample: 3.2
  sample: {new_type: fast, migration_policy: on-demand, moved: true}
actions:
  description: The migration or retype the run started (in check mode, the one it would start).
  returned: always
  type: list
  elements: str
  sample: [migrate volume db-data to host devhost@file2#file2]
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import service
from ansible_collections.storage.mobility.plugins.module_utils.services.volume_migration import MIGRATION_POLICIES


def serve(ctx, params):
    """Move or retype the volume (Cinder, or the collection's own volume driver that host names)."""
    return service(ctx, 'volume_migration', pool=params['host']).run_migrate(params)


def main():
    run_module(mobility_module(dict(
        volume=dict(type='str', required=True),
        force_host_copy=dict(type='bool', default=False),
        lock_volume=dict(type='bool', default=False),
        host=dict(type='str'),
        cluster=dict(type='str'),
        new_type=dict(type='str'),
        migration_policy=dict(type='str', choices=list(MIGRATION_POLICIES)),
        rate_limit=dict(type='int'),
        async_migration=dict(type='bool', default=False),
    ), wait=True, states=('migrated', 'cancelled')), serve)


if __name__ == '__main__':
    main()
