#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: pool_info
short_description: List pools with their capacity and capabilities
version_added: 0.1.0
description:
  - Returns every declared pool (or one) with its capacity and the capabilities a scheduler
    matches share types against, in the names operators know from the reference service.
author:
  - storage.mobility maintainers (@storage-mobility)
requirements:
  - C(btrfs-progs) for backends of driver V(btrfs)
extends_documentation_fragment:
  - storage.mobility.backends
attributes:
  check_mode:
    support: full
    description: The module only reads.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to compare.
options:
  pool:
    description: Only this pool, V(host@backend#pool).
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
- name: Pools of mobility_backends
  hosts: localhost
  gather_facts: false
  module_defaults:
    group/storage.mobility.mobility:
      backends: "{{ mobility_backends }}"
  tasks:
    - name: Show free space per pool
      storage.mobility.pool_info:
      register: pools

    - name: Print it
      ansible.builtin.debug:
        msg: "{{ item.name }}: {{ item.capabilities.free_capacity_gb }} GiB free"
      loop: "{{ pools.pools }}"
'''

RETURN = r'''
pools:
  description: The pools with their capabilities.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Address of the pool, V(host@backend#pool).
      type: str
      sample: stor1@generic1#alpha
    path:
      description: Folder of the pool.
      type: str
      sample: /srv/pools/alpha
    driver:
      description: Driver of the backend.
      type: str
      sample: posix
    capabilities:
      description: Capacity in GiB and capabilities of the pool.
      type: dict
      sample: {total_capacity_gb: 100.0, free_capacity_gb: 42.5, allocated_capacity_gb: 10, snapshot_support: true}
    shares:
      description: Names of the shares whose active instance is in the pool.
      type: list
      elements: str
      sample: [projects]
  sample: []
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.storage.mobility.plugins.module_utils.common import backends_argument_spec, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import local_service


def main():
    argument_spec = backends_argument_spec()
    argument_spec.update(pool=dict(type='str'))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    p = module.params
    run_module(module, lambda ctx: {'changed': False, 'pools': local_service(ctx, 'share').pools(p['pool'])})


if __name__ == '__main__':
    main()
