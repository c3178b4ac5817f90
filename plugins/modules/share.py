#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: share
short_description: Create, update and delete file shares
version_added: 0.1.0
description:
  - Creates a share in a pool, keeps its size figure, description, metadata and access rules as
    declared, and deletes it.
  - The share is created once in the pool given by O(pool); later runs do not move it (use
    M(storage.mobility.share_migration) for that) and warn when it lives elsewhere.
  - Access rules are declarative; the list given replaces the rules of the share.
  - With a backend of driver V(manila) the share is created in OpenStack Manila (in the pool O(pool) when
    given, through the scheduler hint C(only_host), else where Manila's scheduler puts it), resized with
    Manila's extend and shrink, and deleted there; O(wait) waits until Manila reports it V(available) or gone.
    See C(docs/openstack.md).
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.wait, storage.mobility.attributes, storage.mobility.attributes.state_module]
options:
  name:
    description:
      - Name of the share. No V(/), V(..), leading V(-) or V(.), NUL or newline.
      - At most 250 bytes (UTF-8), so that every file name derived from it (its record
        C(<name>.json) and lock C(<name>.lock) add 5 bytes) fits in the 255 bytes of a path
        component. A longer name is refused before anything is created.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the share; V(absent) deletes it with its data.
      - A share with snapshots, replicas or a running migration is not deleted.
    type: str
    choices: [present, absent]
    default: present
  pool:
    description:
      - Pool to create the share in, V(host@backend#pool). Required to create, except in Manila, where
        the scheduler picks a pool when it is not given.
    type: str
  size:
    description:
      - Size in GiB, recorded as the share's quota figure. Required to create.
      - In Manila the share's real size; a later run with another size extends or shrinks it.
    type: int
  protocol:
    description: Protocol the share is meant for; cannot change after creation. Manila defaults to V(NFS).
    type: str
    choices: [NFS, CIFS, CEPHFS, GLUSTERFS, HDFS, MAPRFS]
  share_type:
    description: Name of the share type. Defaults to V(default) on creation.
    type: str
  extra_specs:
    description:
      - Extra specs of the share type. Capability specs (V(snapshot_support),
        V(driver_handles_share_servers) and the like) must be satisfied by the pool.
    type: dict
  access_rules:
    description:
      - The access rules of the share; omit to leave the rules as they are, V([]) to remove all.
      - With the V(bind) export helper the share is exported read-write when any rule is V(rw),
        read-only when all rules are V(ro), and not exported without rules.
    type: list
    elements: dict
    suboptions:
      access_type:
        description: Kind of client identity.
        type: str
        choices: [ip, user, cert, cephx]
        default: ip
      access_to:
        description: The client, for example V(10.0.0.0/24) for V(ip).
        type: str
        required: true
      access_level:
        description: Read-write or read-only.
        type: str
        choices: [rw, ro]
        default: rw
  description:
    description: Free text kept with the share.
    type: str
  metadata:
    description: Key/value metadata kept with the share.
    type: dict
'''

EXAMPLES = r'''
# The backends are declared once, in inventory variables (group_vars/all.yml), for example:
#   mobility_backends:
#     - name: generic1
#       driver: posix
#       host: stor1
#       pools:
#         alpha: {path: /srv/pools/alpha}
#         beta: {path: /srv/pools/beta}
# and every module of the collection gets them through module_defaults on its action group.
- name: Shares of the pools in mobility_backends
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ mobility_backends }}"
  tasks:
    - name: Create a share readable and writable by one network
      storage.mobility.share:
        name: projects
        pool: stor1@generic1#alpha
        size: 10
        protocol: NFS
        access_rules:
          - access_to: 10.0.0.0/24
            access_level: rw

    - name: Make it read-only for everybody
      storage.mobility.share:
        name: projects
        access_rules:
          - access_to: 10.0.0.0/24
            access_level: ro

    - name: Delete it
      storage.mobility.share:
        name: projects
        state: absent

- name: The same share in OpenStack Manila (backends passed directly)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Create a share where Manila's scheduler puts it
      storage.mobility.share:
        backends:
          - name: manila
            driver: manila
            cloud: devstack-admin   # a cloud in clouds.yaml
        name: projects
        size: 10
        protocol: NFS
        share_type: default
'''

RETURN = r'''
share:
  description: The share after the run (in check mode, as it would be). Empty after deletion.
  returned: always
  type: dict
  sample:
    name: projects
    id: 0f0e6ab4-6c5e-4a55-a0c5-8a4c1f1b9a11
    host: stor1@generic1#alpha
    status: available
    size: 10
    share_proto: NFS
    task_state: null
    export_location: /srv/exports/projects
    access_rules: [{access_type: ip, access_to: 10.0.0.0/24, access_level: rw, state: active}]
actions:
  description: What the run did, or would do in check mode; one line per step (create, resize, export, access rules, delete).
  returned: always
  type: list
  elements: str
  sample: ["create share projects (10 GiB) in pool stor1@generic1#alpha at /srv/pools/alpha/shares/projects"]
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import service


def serve(ctx, params):
    """Bring the share to its state, through the implementation that serves its pool or name."""
    return service(ctx, 'share', pool=params['pool'], share=params['name']).run(params)


def main():
    run_module(mobility_module(dict(
        name=dict(type='str', required=True),
        pool=dict(type='str'),
        size=dict(type='int'),
        protocol=dict(type='str', choices=['NFS', 'CIFS', 'CEPHFS', 'GLUSTERFS', 'HDFS', 'MAPRFS']),
        share_type=dict(type='str'),
        extra_specs=dict(type='dict'),
        access_rules=dict(type='list', elements='dict', options=dict(
            access_type=dict(type='str', choices=['ip', 'user', 'cert', 'cephx'], default='ip'),
            access_to=dict(type='str', required=True),
            access_level=dict(type='str', choices=['rw', 'ro'], default='rw'),
        )),
        description=dict(type='str'),
        metadata=dict(type='dict'),
    ), wait=True, states=('present', 'absent')), serve)


if __name__ == '__main__':
    main()
