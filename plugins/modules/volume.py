#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: volume
short_description: Create, extend and delete OpenStack Cinder volumes
version_added: 0.1.0
description:
  - Manages a block storage volume in OpenStack Cinder, through a backend with driver V(cinder).
  - V(present) creates the volume when no volume has the name O(name) (or the id O(name)); an existing
    volume is extended when O(size) is larger and gets the O(description) given. Cinder never shrinks a
    volume, and it changes the type of a volume only by a retype, so a smaller O(size) or another
    O(volume_type) or O(availability_zone) is refused with the reason; retype with
    M(storage.mobility.volume_migrate).
  - V(absent) deletes the volume; deleting one that is gone changes nothing. Cinder refuses to delete a
    volume that is attached, migrating or has snapshots, and the module reports its answer.
  - With O(wait) the module waits until Cinder reports the volume V(available) (or gone).
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.wait, storage.mobility.attributes, storage.mobility.attributes.state_module]
options:
  name:
    description: Name of the volume (or the id of an existing volume).
    type: str
    required: true
  state:
    description: Whether the volume should exist.
    type: str
    choices: [present, absent]
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
seealso:
  - module: storage.mobility.volume_info
    description: Where the volume is, and whether it is migrating.
  - module: storage.mobility.volume_migrate
    description: Moves the volume to another pool or cluster, or gives it another type.
'''

EXAMPLES = r'''
# Volumes need OpenStack Cinder: a backend with driver cinder (cloud names a cloud in clouds.yaml), here passed directly.
- name: Volumes in OpenStack Cinder
  module_defaults: {group/storage.mobility.mobility: {backends: [{name: cinder, driver: cinder, cloud: devstack-admin}]}}
  block:
    - name: A 10 GiB volume of type fast
      storage.mobility.volume:
        name: db-data
        size: 10
        volume_type: fast

    - name: Delete it
      storage.mobility.volume:
        name: db-data
        state: absent
'''

RETURN = r'''
volume:
  description: The volume as Cinder reports it (empty after a deletion); see M(storage.mobility.volume_info) for the fields.
  returned: always
  type: dict
  sample: {id: 3f1b2c4d-1111-2222-3333-444455556666, name: db-data, status: available, size: 10,
           volume_type: fast, host: devhost@file1#file1, migration_status: null}
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
    """Bring the volume to its state (Cinder serves volumes; the collection's own drivers refuse)."""
    return service(ctx, 'volume').run(params)


def main():
    run_module(mobility_module(dict(
        name=dict(type='str', required=True),
        size=dict(type='int'),
        volume_type=dict(type='str'),
        availability_zone=dict(type='str'),
        description=dict(type='str'),
    ), wait=True, states=('present', 'absent')), serve)


if __name__ == '__main__':
    main()
