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
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.attributes, storage.mobility.attributes.info_module]
options:
  pool:
    description: Only this pool, V(host@backend#pool).
    type: str
'''

EXAMPLES = r'''
# Every pool of mobility_backends (declared once in inventory variables, see storage.mobility.share).
- name: Pools of mobility_backends
  module_defaults: {group/storage.mobility.mobility: {backends: "{{ mobility_backends }}"}}
  block:
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

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import local_service


def serve(ctx, params):
    """The pools of the collection's own backends."""
    return {'changed': False, 'pools': local_service(ctx, 'share').pools(params['pool'])}


def main():
    run_module(mobility_module(dict(pool=dict(type='str'))), serve)


if __name__ == '__main__':
    main()
