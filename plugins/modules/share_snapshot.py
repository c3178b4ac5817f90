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
  - A snapshot of a replicated share is carried to its replicas by their next update; while an
    C(in_sync) replica lacks it, it stays C(creating) with C(replicas_pending) (the replica ids), as
    in the reference. A rerun returns it unchanged.
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.attributes]
attributes:
  check_mode:
    support: full
    details: Returns the planned actions; changes nothing.
  diff_mode:
    support: none
    details: The snapshot itself is returned.
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
# Snapshots of a share in a pool of mobility_backends (declared as in the examples of storage.mobility.share).
- name: Snapshots of a share of mobility_backends
  module_defaults: {group/storage.mobility.mobility: {backends: "{{ mobility_backends }}"}}
  block:
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
  description: The snapshot taken or deleted (in check mode, the one that would be).
  returned: always
  type: list
  elements: str
  sample: ["snapshot share projects as before-upgrade"]
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.services.registry import local_service


def serve(ctx, params):
    """Snapshots are taken by the collection's own drivers."""
    return local_service(ctx, 'share').run_snapshot(params)


def main():
    run_module(mobility_module(dict(
        share=dict(type='str', required=True),
        name=dict(type='str', required=True),
        description=dict(type='str'),
    ), states=('present', 'absent')), serve)


if __name__ == '__main__':
    main()
