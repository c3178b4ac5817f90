#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: volume
short_description: Create, extend, attach, detach and delete block volumes (OpenStack Cinder or driver file)
version_added: 0.1.0
description:
  - Manages a block storage volume in OpenStack Cinder, through a backend with driver V(cinder), or on the
    collection's own driver V(file) (a sparse image file per volume in a pool folder; see docs/volumes.md).
  - V(present) creates the volume when no volume has the name O(name) (or the id O(name)); an existing
    volume is extended when O(size) is larger and gets the O(description) given. Cinder never shrinks a
    volume, and it changes the type of a volume only by a retype, so a smaller O(size) or another
    O(volume_type) or O(availability_zone) is refused with the reason; retype with
    M(storage.mobility.volume_migrate).
  - V(absent) deletes the volume; deleting one that is gone changes nothing. Cinder refuses to delete a
    volume that is attached, migrating or has snapshots, and the module reports its answer.
  - With O(wait) the module waits until Cinder reports the volume V(available) (or gone).
  - On driver V(file), O(pool) places a new volume and O(format) gives its image format; V(attached)
    starts a C(qemu-storage-daemon) that exports the volume as a writable FUSE file (returned as
    C(attachment.path), status V(in-use)) and V(detached) stops it and unmounts the file (status
    V(available)). A volume that is attached, migrating or in another pool than O(pool) is refused with
    the reason.
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.wait, storage.mobility.attributes, storage.mobility.attributes.state_module]
options:
  name:
    description: Name of the volume (or the id of an existing volume).
    type: str
    required: true
  state:
    description:
      - Whether the volume should exist; V(attached) and V(detached) (driver V(file) only) also make it
        attached or not.
    type: str
    choices: [present, absent, attached, detached]
    default: present
  size:
    description: Size in GiB. Required to create; a larger size extends an existing volume.
    type: int
  volume_type:
    description: Volume type (name or id) of a new volume; Cinder's default type when not set.
    type: str
  availability_zone:
    description: Availability zone of a new volume.
    type: str
  description:
    description: Description of the volume.
    type: str
  pool:
    description:
      - Driver V(file) only - the pool of a new volume, V(host@backend#pool). Needed when the volume
        backends have more than one pool. An existing volume in another pool is refused (move it with
        M(storage.mobility.volume_migrate)).
    type: str
  format:
    description:
      - Driver V(file) only - the image format of a new volume; V(raw) when not set. An existing volume
        keeps its format (another one is refused).
    type: str
    choices: [raw, qcow2]
seealso:
  - module: storage.mobility.volume_info
    description: Where the volume is, and whether it is migrating.
  - module: storage.mobility.volume_migrate
    description: Moves the volume to another pool or cluster, or gives it another type.
'''

EXAMPLES = r'''
# Cinder volumes: a backend with driver cinder (cloud names a cloud in clouds.yaml), here passed directly.
- name: Volumes in OpenStack Cinder
  hosts: localhost
  gather_facts: false
  module_defaults: {group/storage.mobility.mobility: {backends: [{name: cinder, driver: cinder, cloud: devstack-admin}]}}
  tasks:
    - name: A 10 GiB volume of type fast
      storage.mobility.volume:
        name: db-data
        size: 10
        volume_type: fast

    - name: Delete it
      storage.mobility.volume:
        name: db-data
        state: absent

# Volumes of the collection's own file driver, declared in inventory variables, for example:
#   mobility_volume_backends:
#     - name: blocks
#       driver: file
#       pools: {fast: /srv/blocks/fast, slow: /srv/blocks/slow}
- name: Volumes on the collection's own file driver
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ mobility_volume_backends }}"
  tasks:
    - name: A sparse 4 GiB qcow2 volume in pool fast
      storage.mobility.volume:
        name: scratch
        size: 4
        pool: localhost@blocks#fast
        format: qcow2

    - name: Attach it; a consumer writes through the returned path
      storage.mobility.volume:
        name: scratch
        state: attached
      register: attached

    - name: Write to it through the attachment
      ansible.builtin.command:
        argv: [dd, if=/dev/urandom, "of={{ attached.attachment.path }}", bs=1M, count=8, "conv=notrunc,fsync"]
      changed_when: true

    - name: Detach it
      storage.mobility.volume:
        name: scratch
        state: detached
'''

RETURN = r'''
volume:
  description: The volume as Cinder reports it (empty after a deletion); see M(storage.mobility.volume_info) for the fields.
  returned: always
  type: dict
  sample: {id: 3f1b2c4d-1111-2222-3333-444455556666, name: db-data, status: available, size: 10,
           volume_type: fast, host: devhost@file1#file1, migration_status: null}
attachment:
  description:
    - Driver V(file), V(attached) - the attachment; C(path) is the FUSE file a consumer opens read-write,
      C(pid) the storage daemon that serves it.
  returned: when O(state=attached)
  type: dict
  sample: {id: 0c9f..., path: /srv/blocks/fast/.mobility/attachments/volume-3f1b..., pid: 4242,
           attached_at: '2026-12-01T10:00:00.000000Z', mechanism: qemu-storage-daemon fuse export}
actions:
  description: What was done (in check mode, what would be done).
  returned: always
  type: list
  elements: str
  sample: [create volume db-data (10 GiB)]
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import service


def serve(ctx, params):
    """Bring the volume to its state (Cinder, or the collection's own volume driver that pool names)."""
    return service(ctx, 'volume', pool=params['pool']).run(params)


def main():
    run_module(mobility_module(dict(
        name=dict(type='str', required=True),
        size=dict(type='int'),
        volume_type=dict(type='str'),
        availability_zone=dict(type='str'),
        description=dict(type='str'),
        pool=dict(type='str'),
        format=dict(type='str', choices=['raw', 'qcow2']),
    ), wait=True, states=('present', 'absent', 'attached', 'detached')), serve)


if __name__ == '__main__':
    main()
