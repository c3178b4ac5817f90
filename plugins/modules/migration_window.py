#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: migration_window
short_description: Decide which ready share migration to complete now inside a maintenance window
version_added: 0.1.0
description:
  - For the shares of a stored plan (O(plan_name), made by M(storage.mobility.migration_plan)) or of a list
    (O(shares)), reads each share's record and returns the next share whose switchover (phase 2) fits before
    the window's end with a margin, or none, and every other share with the reason it is left.
  - A share is ready when phase 1 is done (C(task_state) V(data_copying_completed) or
    V(migration_driver_phase1_done)); a share whose switchover was interrupted (V(migration_completing)) comes
    first.
  - The estimate of a switchover is a final pass over what changed in the source since its last copy began
    (entries whose mtime or ctime is later, counted on the storage host) at the rate model's figures, plus
    O(switchover_seconds). A switchover is chosen only when the estimate plus the margin ends by the window's
    end; never at or after the end.
  - This module switches nothing; the C(complete_ready_migrations) playbook completes the share it returns
    and asks again, with the real clock, so a switchover that took longer than estimated shortens what is left.
  - With O(window_minutes) the window opens at the first call and is stored with the records,
    C(.mobility/windows/<name>.json) in the pool holding the plan (with O(shares), the first declared share
    pool), so that a rerun after a crash keeps the same end. A stored window is followed while it is open
    and after it ended (nothing starts then); O(new_window=true) opens a new one.
  - Check mode stores no window; the decision is the same.
extends_documentation_fragment: [storage.mobility.backends, storage.mobility.attributes]
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
options:
  plan_name:
    description: A plan stored by M(storage.mobility.migration_plan); its moves are the shares of the window.
    type: str
  shares:
    description: The shares of the window (instead of O(plan_name)). An unknown share is an error.
    type: list
    elements: str
  name:
    description: Name of the stored window. Default O(plan_name), or V(window) with O(shares).
    type: str
  window_end:
    description:
      - The end of the window, an ISO 8601 time with its zone (V(2026-12-02T05:00:00Z)). A time in the past is
        an error unless it is the end of the window stored under O(name) (a rerun after the end, when nothing starts).
      - Exactly one of O(window_end) and O(window_minutes).
    type: str
  window_minutes:
    description: The length of a window that opens at the first call (stored; see the description).
    type: float
  new_window:
    description: Open a new window of O(window_minutes) even when one is stored under O(name).
    type: bool
    default: false
  margin:
    description: The time kept free after each estimate, C(seconds) plus C(fraction) times the estimate.
    type: dict
    default: {}
    suboptions:
      seconds:
        description: Seconds kept free after every switchover.
        type: float
        default: 60
      fraction:
        description: Fraction of each estimate added to it.
        type: float
        default: 0.1
  order:
    description:
      - The order of the switchovers (share names). Shares it leaves out come after it, largest expected
        disruption first. Default largest expected disruption first.
    type: list
    elements: str
  skip:
    description: Shares to leave for later whatever their state (the playbook passes those whose switchover failed in this run).
    type: list
    elements: str
  rates:
    description:
      - The rate model of the final pass, as O(storage.mobility.migration_plan#module:rates) takes it (keys
        V(host), V(driver), V(driver/<driver>)). Without C(host.bytes_per_second), the rate the records
        measured on earlier verified copies, else 100 MiB/s.
    type: dict
  switchover_seconds:
    description:
      - What a switchover takes besides copying what changed (the final pass's start, scan and verification, the
        switch). Default the median of the most recent switchovers the records measured (their time less their
        final pass's copy), else 30 s host-assisted and 5 s driver-assisted.
    type: float
'''

EXAMPLES = r'''
# mobility_backends declared once in inventory variables (see storage.mobility.share).
- name: Plan the evacuation of pool alpha (the evacuate_pool playbook runs phase 1 of its shares)
  storage.mobility.migration_plan:
    backends: "{{ mobility_backends }}"
    name: evacuate-alpha
    source: stor1@generic1#alpha
    destinations: [stor1@generic1#beta]

- name: Which share to complete now, in a window of two hours opened by the first call
  storage.mobility.migration_window:
    backends: "{{ mobility_backends }}"
    plan_name: evacuate-alpha
    window_minutes: 120
    margin: {seconds: 120, fraction: 0.2}
  register: decision

- name: The next switchover, or why nothing starts
  ansible.builtin.debug:
    msg: "{{ decision.next.name if decision.next else 'nothing fits: ' ~ (decision.left | map(attribute='reason') | join('; ')) }}"

# Instead of a plan, shares: [home, projects]; instead of a length, window_end: "2026-12-02T05:00:00Z"
# (a time with its zone); order: [projects] completes projects first when it fits. The
# complete_ready_migrations playbook completes the share named in next and asks again.
'''

RETURN = r'''
window:
  description:
    - The window, C(name), C(path) (where it is stored), C(opened_at), C(ends_at), C(window_minutes),
      C(source) (V(given), V(opened) now or V(stored)), C(now), C(seconds_left), C(length_seconds),
      C(elapsed_seconds) (since the window opened), C(ended).
  returned: always
  type: dict
  sample: {name: evacuate-alpha, ends_at: "2026-12-02T05:00:00Z", seconds_left: 3540.2, ended: false, source: stored}
next:
  description: The share to complete now (as in RV(shares)), or null when nothing fits.
  returned: always
  type: dict
  sample: {name: projects, estimate: 41.5, needs_seconds: 105.7, reason: "fits: needs 106 s with the margin, 3540 s left in the window"}
shares:
  description:
    - Every share of the window, C(name), C(task_state), C(ready), C(reason); for a ready share its
      C(estimate) (seconds), C(needs_seconds) (with the margin), C(changed_bytes), C(changed_files), C(since)
      (when its last copy began, less a 5 s clock allowance), C(bytes), C(files), C(switchover_seconds) and
      C(switchover_source) (V(given), V(measured), V(default)), C(mechanism), C(destination_pool).
  returned: always
  type: list
  elements: dict
left:
  description:
    - Every share but the next, with the reason (not ready, already completed, does not fit, waits).
    - With O(plan_name), also the shares the plan could not place, each with the plan's reason
      (C(not in the plan) and why, for example a pool with no room left above its headroom).
  returned: always
  type: list
  elements: dict
  sample: [{name: scratch, reason: "needs 420 s with the margin (estimate 327 s), 300 s left in the window"}]
plan:
  description: The rest of the window by the estimates (migration_schedule.plan_window), C(started) and C(left).
  returned: always
  type: dict
margin:
  description: The margin used, C(seconds) and C(fraction).
  returned: always
  type: dict
rates:
  description: C(host_bytes_per_second), its C(source) (V(given), V(measured), V(default)) and C(measured_switchover_seconds) per mechanism.
  returned: always
  type: dict
'''

from ansible_collections.storage.mobility.plugins.module_utils.common import mobility_module, run_module
from ansible_collections.storage.mobility.plugins.module_utils.managers.migration_window import MigrationWindowManager


def serve(ctx, params):
    return MigrationWindowManager(ctx).run(params)


def main():
    run_module(mobility_module(dict(
        plan_name=dict(type='str'),
        shares=dict(type='list', elements='str'),
        name=dict(type='str'),
        window_end=dict(type='str'),
        window_minutes=dict(type='float'),
        new_window=dict(type='bool', default=False),
        margin=dict(type='dict', default={}, options=dict(
            seconds=dict(type='float', default=60.0),
            fraction=dict(type='float', default=0.1),
        )),
        order=dict(type='list', elements='str'),
        skip=dict(type='list', elements='str'),
        rates=dict(type='dict'),
        switchover_seconds=dict(type='float'),
    ), mutually_exclusive=[('plan_name', 'shares'), ('window_end', 'window_minutes')],
        required_one_of=[('plan_name', 'shares'), ('window_end', 'window_minutes')]), serve)


if __name__ == '__main__':
    main()
