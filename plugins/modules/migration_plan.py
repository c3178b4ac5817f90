#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: migration_plan
short_description: Plan the evacuation or rebalance of a pool, backend or storage host
version_added: 0.1.0
description:
  - Reads every share of a source pool, backend or storage host (the collection's own pools), counts
    its bytes and files on the storage host, and proposes a destination among the allowed pools by
    free capacity above a headroom, share type capabilities, replication domain and snapshot rules,
    with the mechanism (driver- or host-assisted) and an estimated copy time for each move.
  - A share that fits nowhere is listed in C(unplaced) of RV(plan) with each pool's reason. The plan never
    overfills a pool, as it counts what earlier moves of the same plan add.
  - The plan is stored with the records, C(.mobility/plans/<name>.json) in the first source pool
    (written atomically). A rerun with the same request returns the stored plan unchanged;
    O(new_plan=true) replaces it. A stored plan made for another request is refused with the reason.
  - Check mode computes the plan and stores nothing; C(--diff) shows the stored plan before and the
    new one after.
  - Rates. The host-assisted copy rate is O(rates) C(host.bytes_per_second) when given, else the rate
    the records measured on earlier verified copies, else 100 MiB/s.
  - Shares of OpenStack backends are not planned by this module.
  - With O(data_nodes), the host-assisted copies are assigned to the copy slots of the data nodes
    (RV(copies)); the playbook C(storage.mobility.evacuate_pool) runs them. Without
    O(copies_per_storage_host) each slot is a lane that runs its copies back to back, longest first;
    with it the copies run in rounds, so that the limit holds whatever the copies really take.
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.attributes]
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
options:
  name:
    description: Name of the plan (the stored file's name).
    type: str
    required: true
  source:
    description: What to evacuate, V(host@backend#pool), V(host@backend) or V(host).
    type: str
    required: true
  destinations:
    description:
      - The pools (V(host@backend#pool)) the shares may go to.
      - Default every declared share pool that is not a source pool.
    type: list
    elements: str
  headroom:
    description: Fraction of each pool's capacity the plan keeps free (V(0.1) is 10 %).
    type: float
    default: 0.1
  rates:
    description:
      - The rate model, keys V(host), V(driver) or V(driver/<driver>), each a dict of
        C(bytes_per_second), C(seconds_per_file), C(fixed_seconds). Keys left out keep their defaults.
    type: dict
  flags:
    description:
      - Migration flags asked of every move (C(writable), C(nondisruptive), C(preserve_metadata),
        C(preserve_snapshots)); a flag only a driver can honour keeps a share off host-assisted moves.
    type: dict
  new_plan:
    description: Make a new plan even when one is stored under O(name), and store it in its place.
    type: bool
    default: false
  data_nodes:
    description:
      - The data nodes (inventory host names) that copy the host-assisted moves. When given, the
        copies are assigned to their slots, in lanes or in rounds (RV(copies)), and the assignment is
        stored with the plan.
      - A rerun with the same data nodes and limits follows the stored assignment. With other data
        nodes or limits the copies whose phase 1 is not over are assigned again; a copy running on a
        data node still given stays there.
      - A copy recorded on a data node that is no longer given is I(held) (C(held) in RV(copies)), assigned
        nowhere, until O(lost_data_nodes) names that node, because the node may only be cut off from
        the controller and still copying, and a second copy into the same destination would race it.
      - Omitted or empty, no assignment is made.
    type: list
    elements: str
  lost_data_nodes:
    description:
      - Data nodes the operator confirms lost for good (powered off, or their copies stopped). The
        copies recorded on them go to the O(data_nodes) on this run.
      - A node cannot be in both lists.
    type: list
    elements: str
    default: []
  copies_per_data_node:
    description: Copies a data node runs at once (its slots). A positive integer.
    type: int
    default: 1
  copies_per_storage_host:
    description:
      - Copies at once that read from or write to one storage host (the C(host) of the source or
        destination pool's V(host@backend#pool)); a copy counts against both. A positive integer.
      - Omitted, no limit per storage host, and the copies are assigned in lanes (RV(copies)).
      - Given, the copies are assigned in rounds; a round starts when every copy of the round before
        ended, so the rounds wait for their longest copy.
    type: int
'''

EXAMPLES = r'''
# mobility_backends declared once in inventory variables (see storage.mobility.share).
- name: Plan the evacuation of pool alpha
  storage.mobility.migration_plan:
    backends: "{{ mobility_backends }}"
    name: evacuate-alpha
    source: stor1@generic1#alpha
    destinations: [stor1@generic1#beta]
    headroom: 0.05
  register: plan

- name: Where each share goes
  ansible.builtin.debug:
    msg: "{{ item.share }} -> {{ item.destination }} ({{ item.mechanism }}-assisted, about {{ item.estimated_copy_seconds }} s)"
  loop: "{{ plan.plan.moves }}"

- name: Shares that fit nowhere, with the reason
  ansible.builtin.debug:
    msg: "{{ item.share }}: {{ item.reason }}"
  loop: "{{ plan.plan.unplaced }}"

- name: Plan it and assign the copies to two data nodes, two copies each, one per storage host at once
  storage.mobility.migration_plan:
    backends: "{{ mobility_backends }}"
    name: evacuate-alpha-copies
    source: stor1@generic1#alpha
    data_nodes: [dn1, dn2]
    copies_per_data_node: 2
    copies_per_storage_host: 1
  register: plan

# A source may also be a whole backend (stor1@generic1) or storage host (stor1). A rerun follows
# the stored plan; new_plan: true makes a new one from the shares and pools as they are now.
'''

RETURN = r'''
name:
  description: Name of the plan.
  returned: always
  type: str
  sample: evacuate-old
path:
  description: Where the plan is (or would be) stored, on the storage host of the first source pool.
  returned: always
  type: str
  sample: /srv/pools/alpha/.mobility/plans/evacuate-old.json
stored:
  description: True when the returned plan is the stored one (followed from an earlier run or written now).
  returned: always
  type: bool
created_at:
  description: When the plan was made (UTC).
  returned: always
  type: str
rates:
  description:
    - C(host_bytes_per_second) used for host-assisted estimates, C(source) (V(given), V(measured) or V(default))
      and C(measured) (copies, bytes, seconds, bytes_per_second from the records, or null).
  returned: always
  type: dict
plan:
  description:
    - The plan of managers/migration_plan.py. C(id) digests the input; C(moves) lists share, source,
      destination, mechanism, driver_refusal, bytes, files, source_host, destination_host and
      estimated_copy_seconds; C(unplaced) lists share, pool, bytes and reason; C(pools) lists each pool's
      capacity_bytes, free_bytes, usable_bytes, planned_bytes, free_bytes_after; C(totals) counts them.
  returned: always
  type: dict
  sample: {id: 3f1c0a9e2b7d4c11, moves: [], unplaced: [], pools: [], totals: {shares: 0, placed: 0}}
copies:
  description:
    - The assignment of the host-assisted copies to the data nodes (managers/migration_schedule.py
      C(assign_lanes) or C(assign_rounds)), null when no O(data_nodes) were given and none is stored.
    - C(mode) V(lanes) (no O(copies_per_storage_host)) or V(rounds).
    - C(lanes) lists the lanes, one per copy slot that has copies (C(data_node), C(slot), C(shares) in
      the order the lane runs them, each as soon as the one before it ended); empty in rounds.
    - C(rounds) lists the rounds in order, each a list of assignments (C(share), C(data_node), C(round),
      C(slot), estimated C(seconds), C(source_host), C(destination_host)); a round's copies run at
      once and the next round starts when they all ended; empty in lanes.
    - C(assignments) lists every copy once; in lanes with its C(position) in the lane and its
      estimated C(start), C(end) and C(seconds).
    - "C(data_nodes), C(copies_per_data_node), C(copies_per_storage_host) it was made for; C(followed)
      true when the stored one was followed; C(reason) why it was made (V(first assignment),
      V(data nodes gone: n2)...); C(pinned) copies kept on the data node where they run;
      C(held) copies recorded on a data node no longer given and not confirmed lost (C(share),
      C(data_node), C(job_id), C(reason)), assigned nowhere; C(lost_data_nodes) as given;
      C(phase1_done) shares left out as their phase 1 is over; C(estimated_seconds), C(rate), C(made_at)."
  returned: always
  type: dict
  sample:
    data_nodes: [dn1, dn2]
    copies_per_data_node: 2
    copies_per_storage_host: null
    followed: false
    reason: first assignment
    mode: lanes
    lanes: [{data_node: dn1, slot: 1, shares: [s1, s2]}]
    rounds: []
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.managers.evacuation import MigrationPlanManager


def serve(ctx, params):
    return MigrationPlanManager(ctx).run(params)


def main():
    run_module(mobility_module(dict(
        name=dict(type='str', required=True),
        source=dict(type='str', required=True),
        destinations=dict(type='list', elements='str'),
        headroom=dict(type='float', default=0.1),
        rates=dict(type='dict'),
        flags=dict(type='dict'),
        new_plan=dict(type='bool', default=False),
        data_nodes=dict(type='list', elements='str'),
        copies_per_data_node=dict(type='int', default=1),
        copies_per_storage_host=dict(type='int'),
        lost_data_nodes=dict(type='list', elements='str', default=[]),
    )), serve)


if __name__ == '__main__':
    main()
