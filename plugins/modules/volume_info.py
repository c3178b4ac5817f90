#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: volume_info
short_description: List block volumes with their host, migration status and progress
version_added: 0.1.0
description:
  - Reads the volumes of the project from OpenStack Cinder (a backend with driver V(cinder)), or only
    the one named, with the fields an operator follows during a migration - the pool the volume is on
    (C(host), V(host@backend#pool)), C(migration_status) and the name id Cinder gives a volume after a
    host copy. Changes nothing.
  - On driver V(file) (the collection's own volumes) each volume also has its C(format), image C(path),
    C(allocated_bytes), C(attachments) and, while it migrates, C(migration.progress) read from the
    copier (bytes done and total, percent, rate, ETA; for a pull, over the source's data, not its holes).
  - The pools Cinder can place volumes in are returned as C(pools) (an administrator call; empty when
    the policy forbids it).
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.attributes, storage.mobility.attributes.info_module]
options:
  name:
    description: Only the volume with this name (or id).
    type: str
  pool:
    description:
      - Ask the backend of this pool (V(host@backend#pool) or V(host@backend)); when both a V(cinder) and a
        V(file) backend are declared, this picks the V(file) one.
    type: str
seealso:
  - module: storage.mobility.volume
  - module: storage.mobility.volume_migrate
'''

EXAMPLES = r'''
# Volumes need OpenStack Cinder: a backend with driver cinder (cloud names a cloud in clouds.yaml), here passed directly.
- name: Volumes in OpenStack Cinder
  module_defaults: {group/storage.mobility.mobility: {backends: [{name: cinder, driver: cinder, cloud: devstack-admin}]}}
  block:
    - name: Where is the volume, and is it migrating?
      storage.mobility.volume_info:
        name: db-data
      register: info

    - name: Show it
      ansible.builtin.debug:
        msg: "{{ info.volumes[0].host }} {{ info.volumes[0].migration_status }}"
'''

RETURN = r'''
volumes:
  description: The volumes found.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: Id of the volume.
      type: str
      sample: 3f1b2c4d-1111-2222-3333-444455556666
    name:
      description: Name of the volume.
      type: str
      sample: db-data
    status:
      description: Status of the volume (V(available), V(in-use), V(maintenance) during a locked migration, ...).
      type: str
      sample: available
    size:
      description: Size in GiB.
      type: int
      sample: 10
    volume_type:
      description: Name of the volume type.
      type: str
      sample: fast
    availability_zone:
      description: Availability zone of the volume.
      type: str
      sample: nova
    host:
      description: The pool the volume is on, V(host@backend#pool) (Cinder's C(os-vol-host-attr:host)).
      type: str
      sample: devhost@file1#file1
    cluster_name:
      description: The cluster of the volume's service, when the cloud runs clustered volume services.
      type: str
      sample: null
    migration_status:
      description:
        - Status of the last migration - V(starting), V(migrating), V(completing), V(success) or V(error),
          or null when the volume never migrated. The temporary copy of a host copy shows V(target:<id>).
      type: str
      sample: success
    name_id:
      description:
        - The id Cinder uses for the volume's storage (C(os-vol-mig-status-attr:name_id)); set after a host
          copy, when the volume's data lives in the copy that took its place. Null when it is the volume's id.
      type: str
      sample: 8d6e0f3a-aaaa-bbbb-cccc-ddddeeeeffff
    os-vol-host-attr:host:
      description: Cinder's own attribute for C(host).
      type: str
      sample: devhost@file1#file1
    os-vol-mig-status-attr:name_id:
      description: Cinder's own attribute for C(name_id).
      type: str
      sample: null
    os-vol-mig-status-attr:migstat:
      description: Cinder's own attribute for C(migration_status).
      type: str
      sample: success
    attachments:
      description: Servers (or attachment ids) the volume is attached to.
      type: list
      elements: str
      sample: []
    description:
      description: Description of the volume.
      type: str
      sample: database files
pools:
  description: The pools Cinder reports (or the pools of the V(file) backends), V(host@backend#pool).
  returned: always
  type: list
  elements: str
  sample: [devhost@file1#file1, devhost@file2#file2]
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import service


def serve(ctx, params):
    """The volumes and pools of the backend that serves volumes."""
    return service(ctx, 'volume', pool=params['pool']).run_info(params)


def main():
    run_module(mobility_module(dict(name=dict(type='str'), pool=dict(type='str'))), serve)


if __name__ == '__main__':
    main()
