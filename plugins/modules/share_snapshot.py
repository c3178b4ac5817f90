#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: share_snapshot
short_description: Take and delete snapshots of a share
version_added: 0.1.0
description:
  - Takes a point-in-time copy of a share, kept in the share's pool, or deletes one.
  - With the V(posix) driver a snapshot is a full copy made with C(cp -a --reflink=auto), so it costs
    no extra space on filesystems that can share blocks (xfs, btrfs) and a full copy elsewhere.
  - Snapshots move with the share in a driver-assisted migration; a host-assisted migration
    cannot carry them.
author:
  - storage.mobility maintainers (@storage-mobility)
requirements:
  - C(btrfs-progs) for backends of driver V(btrfs)
extends_documentation_fragment:
  - storage.mobility.backends
attributes:
  check_mode:
    support: full
    description: Returns the planned actions; changes nothing.
  diff_mode:
    support: none
    description: The snapshot itself is returned.
options:
  share:
    description: Name of the share.
    type: str
    required: true
  name:
    description:
      - Name of the snapshot. No V(/), V(..), leading V(-) or V(.), NUL or newline.
      - At most 246 bytes (UTF-8) - a posix snapshot is copied under C(.<name>.partial) first.
    type: str
    required: true
  state:
    description: V(present) takes the snapshot if it does not exist; V(absent) deletes it.
    type: str
    choices: [present, absent]
    default: present
  description:
    description: Free text kept with the snapshot.
    type: str
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
- name: Snapshots of a share of mobility_backends
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ mobility_backends }}"
  tasks:
    - name: Snapshot a share before a change
      storage.mobility.share_snapshot:
        share: projects
        name: before-upgrade

    - name: Delete the snapshot
      storage.mobility.share_snapshot:
        share: projects
        name: before-upgrade
        state: absent
'''

RETURN = r'''
snapshot:
  description: The snapshot (empty when it does not exist).
  returned: always
  type: dict
  sample: {name: before-upgrade, status: available, path: /srv/pools/alpha/snapshots/projects/before-upgrade}
actions:
  description: What the run did, or would do in check mode.
  returned: always
  type: list
  elements: str
  sample: ["snapshot share projects as before-upgrade"]
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.storage.mobility.plugins.module_utils.common import backends_argument_spec, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import local_service


def main():
    argument_spec = backends_argument_spec()
    argument_spec.update(
        share=dict(type='str', required=True),
        name=dict(type='str', required=True),
        state=dict(type='str', choices=['present', 'absent'], default='present'),
        description=dict(type='str'),
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    run_module(module, lambda ctx: local_service(ctx, 'share').run_snapshot(p))


if __name__ == '__main__':
    main()
