#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: data_copy
short_description: Copy one mounted tree to another on a data node, detached, verified and resumable
version_added: 0.1.0
description:
  - Runs ON a data node (the hosts of the C(data_nodes) group) and copies the contents of the folder
    O(source) into the folder O(destination), keeping what rsync C(-aHAXS --numeric-ids) keeps (archive
    mode, hard links, ACLs, xattrs, sparse files, numeric ids, nanosecond timestamps); into an empty
    destination with several processes that hash each file as they copy it (see O(copy_engine)), otherwise
    with rsync.
  - The copy runs as a detached job in its own session, so a lost Ansible connection does not stop it. Its
    folder C(<state_dir>/<job_id>/) holds C(job.json) (the request), C(status.json) (state, phase and
    progress, rewritten about once a second), C(progress.log) (the progress of each status written, one JSON
    line each), C(report.json), C(worker.log) and, when rsync ran, C(rsync.log).
  - With O(check_hash) the job then compares hash manifests of both trees (type, mode, owner, group, size,
    nanosecond modification time, symlink target, xattrs and ACLs, hard-link structure and a hash of each
    file's content read back from the disk) and fails when anything differs.
  - Running O(state=started) again attaches to a running job, returns the report of a completed one, resumes
    a job whose worker is gone (files already copied are not copied again) and restarts a failed or cancelled
    one. After a failed verification the files whose content differed are copied again.
  - Every process a job starts (rsync, the copying, hashing and walking processes) dies with the job's worker,
    also when the worker is killed with SIGKILL; a run that finds the worker gone stops whatever is left of
    its process group and records in C(status.json) that it failed, in which pass and how far it got.
  - Job folders stay until O(state=absent) removes them (the C(storage.mobility.data_mover) role does at the end
    of a migration). When a job is launched, finished job folders (not running) older than
    O(keep_finished_days) are removed, then the oldest while they take more than O(keep_finished_mb); never
    the folder of a running job, of the job being started, or of the job whose hashes it reuses.
  - Used by the C(storage.mobility.data_mover) role; it can be used on its own.
author:
  - storage.mobility maintainers (@storage-mobility)
requirements:
  - rsync on the data node
  - The Python package C(xxhash) for O(hash_algorithm=xxh128) (without it the job hashes with blake2b and
    says so in its report), C(blake3) for O(hash_algorithm=blake3).
extends_documentation_fragment: [storage.mobility.attributes]
attributes:
  check_mode:
    support: full
    details: Returns what would happen and the predicted job; starts, stops and removes nothing.
  diff_mode:
    support: none
    details: Returns no diff; RV(job) shows the state of the job.
options:
  job_id:
    description:
      - Identifies the job, usually the migration id. No V(/), V(..), leading V(-) or V(.), NUL or newline.
    type: str
    required: true
  state:
    description:
      - V(started) starts the job, or attaches to it, resumes or restarts it as its state requires.
      - V(status) returns the job without changing anything; a job that does not exist has the state V(absent).
      - V(cancelled) stops a running job (its whole process group, even mid-file).
      - V(absent) stops the job if it runs and removes its folder.
    type: str
    choices: [started, status, cancelled, absent]
    default: started
  source:
    description:
      - The folder whose contents are copied (a mounted share). Required with O(state=started).
      - Whether or not it ends with V(/), its contents are copied into O(destination).
    type: path
  destination:
    description:
      - The folder to copy into (a mounted share). Required with O(state=started).
      - Files in it that are not in O(source) are deleted, except those named in O(ignore_files).
    type: path
  state_dir:
    description:
      - The folder holding the job folders.
      - Defaults to V(/var/tmp/storage-mobility/jobs) for root and V(~/.cache/storage-mobility/jobs) otherwise.
    type: path
  ignore_files:
    description:
      - Names skipped at any depth, in the copy and in the verification. Names are literal (wildcard
        characters are escaped); a name may not contain V(/).
      - Nothing is left out silently. The report names what was left out (C(ignored), the first 100 paths
        relative to O(source), and C(ignored_count)), and warns unless all that was left out is an empty folder
        at the top (the C(lost+found) of a filesystem's root).
    type: list
    elements: str
    default: [lost+found]
  check_hash:
    description:
      - Verify the copy by comparing hash manifests of both trees. Without it the report says
        C(verification=skipped) and C(verified=false).
    type: bool
    default: true
  hash_algorithm:
    description:
      - The hash of file contents.
      - V(xxh128) needs the Python package C(xxhash); without it the job uses V(blake2b), warns and reports
        the algorithm it used.
      - V(blake3) needs the Python package C(blake3); without it the module fails.
    type: str
    choices: [xxh128, sha256, blake3, blake2b]
    default: xxh128
  rsync_options:
    description: Extra rsync options appended to O(rsync_base_options), for example V(--no-whole-file).
    type: list
    elements: str
    default: []
  rsync_base_options:
    description:
      - The rsync options of the copy. Replacing them changes what is kept; the verification still compares
        everything (it skips directory or symlink times when V(--omit-dir-times) or V(--omit-link-times) is
        given).
    type: list
    elements: str
    default: ['-aHAXS', '--numeric-ids', '--partial', '--delete', '--info=progress2,stats2', '--modify-window=-1',
              '--filter=-x trusted.SGI_ACL_FILE', '--filter=-x trusted.SGI_ACL_DEFAULT',
              '--filter=-x system.posix_acl_access', '--filter=-x system.posix_acl_default']
  final_pass:
    description:
      - This is the last pass before the switchover. Source files that vanish during the copy (rsync exit
        code 24) fail the job on a final pass and are only a warning otherwise.
    type: bool
    default: false
  wait_seconds:
    description:
      - With O(state=started) or O(state=status), wait up to this many seconds for the job to finish
        before returning its current state. V(0) returns at once. Not in check mode.
    type: int
    default: 0
  bwlimit:
    description: Bandwidth limit passed to rsync C(--bwlimit), for example V(50m).
    type: str
  reuse_hashes:
    description:
      - Reuse hashes recorded by an earlier verification (of this job, or of the last verified job with the same
        O(hash_cache_key)) for the files whose size, modification time and change time (to the nanosecond) and
        inode are unchanged on that side; read and hash only the other files. Any write to a file changes its
        change time, which no program can set back, so a changed file is always read again.
      - With V(false) every file of both trees is read again; that also catches damage that bypassed the
        filesystem (a write to the raw device), which a change time does not show.
      - Not part of the request that decides whether a completed job runs again.
    type: bool
    default: true
  copy_engine:
    description:
      - How the copy is made.
      - V(auto) copies into an empty destination with several processes that copy and hash each file in
        one pass and read the copies back from the disk while the copy goes on (a first copy has nothing to
        compare); any pass that must compare (a rerun, a resumed or repaired job, a final pass) and any
        request with O(rsync_options), O(bwlimit) or other O(rsync_base_options) uses rsync. When the
        verification after such a first copy finds a difference, rsync copies again and the verification
        runs again. The report names the engine used (C(copy_engine)).
      - With V(auto), a final pass (O(final_pass)) after a verified pass of the same trees and key on this data
        node copies and verifies only what changed since, in a I(changes pass) - the source's entries whose change
        time is later than that pass, folders among them whole; the unchanged entries are proven by their change
        times and a seal walk of both trees, which must show nothing else changed. When that cannot be proven (no
        such pass, a restart or a clock that was set, another filesystem, a change at the top of the source or in
        the destination, immutable entries, a side on another host, own rsync options), the final pass copies and
        verifies the whole trees and the report says why (C(changes_pass)).
      - V(rsync) always copies with rsync, and a final pass always copies and verifies the whole trees.
      - Not part of the request that decides whether a completed job runs again.
    type: str
    choices: [auto, rsync]
    default: auto
  hosts:
    description:
      - For a copy between two storage hosts, each side that this data node reaches through a network
        mount (C(sshfs)) from another storage host, how to reach that host with ssh, so that the verification
        reads the side ON ITS HOST's disk (a walk made there and streamed back) and never through the mount,
        and so that what SFTP cannot write (nanosecond times, xattrs and ACLs, hard links) is carried to the
        destination from a walk of the source on its host before the verification. Such a job always copies
        with rsync and hashes with V(blake2b) (or V(sha256) when asked), which the storage hosts compute with
        Python's standard library; the storage host needs C(python3).
      - Keys C(source) and/or C(destination), each a dictionary with C(host) (the storage host's name),
        C(address), C(port), C(user), C(key_file) (a private key file ON this data node; without it, its ssh
        agent or default keys), C(host_keys) (the host's known_hosts lines for the name C(mobility-storage-host),
        checked strictly) and C(path) (the tree's path on that host). The copy plan of
        M(storage.mobility.share_migration) gives them.
    type: dict
  hash_cache_key:
    description:
      - Jobs with the same key (and the same O(ignore_files)) share recorded hashes, for example a phase-1 job
        and the final pass of one migration, whose mount points differ. Defaults to the real paths of
        O(source) and O(destination).
      - Not part of the request that decides whether a completed job runs again.
    type: str
  report_signing:
    description:
      - Binds the report to one pass of one migration (see C(docs/data_mover.md)). The job records
        O(report_signing.migration_id) and O(report_signing.pass_id) in its report, and a completed job's
        report is returned with a C(signature) (HMAC-SHA256 with O(report_signing.key) over the fields that
        say what was proven, seals included) only when it was made for this migration id and pass id.
      - A completed job of another pass id is run again by O(state=started), like any changed request.
      - The C(storage.mobility.data_mover) role passes the C(report_signing) of the copy plan that
        M(storage.mobility.share_migration) returns; the migration takes a report as proof of a verified copy
        only with a valid signature of the pass it waits for.
      - The key is an integrity binding, not a secret against root on the controller; it is never written to
        the job folder and Ansible hides it in this module's output.
    type: dict
    suboptions:
      migration_id:
        description: The migration the report belongs to.
        type: str
        required: true
      pass_id:
        description: The pass of that migration (phase 1 or one final pass).
        type: str
        required: true
      key:
        description: The pass's signing key.
        type: str
        required: true
  keep_finished_days:
    description:
      - When a job is launched, remove the folders of finished jobs (completed, failed, cancelled, or whose
        worker is gone) in O(state_dir) not updated for more than this many days. V(0) keeps them.
    type: int
    default: 30
  keep_finished_mb:
    description:
      - When a job is launched and the folders of finished jobs in O(state_dir) take more than this many MiB
        together (mostly their hash caches, about 200 bytes per file), remove the oldest until they do not.
        V(0) sets no bound.
      - A removed phase-1 job only costs its hashes; a final pass then reads every file again.
    type: int
    default: 4096
  warn_writable_source:
    description:
      - Warn when O(source) is writable. The C(storage.mobility.data_mover) role sets it when both sides use
        helper V(none), which mounts nothing, so the read-only source cannot be enforced.
    type: bool
    default: false
notes:
  - The job's state is one of C(running), C(completed), C(failed), C(cancelled) (and C(absent) for a job that
    does not exist). The module fails when the job has failed (with O(state=started) or O(state=status)),
    with the job's error as message and the job in the result.
  - A job whose worker disappeared (the data node restarted, the process was killed) is reported as failed
    with C(interrupted=true) and an error that names the pass (a copy pass or the final pass), the phase and
    the progress of its last status; O(state=started) resumes it.
  - The percentage and the ETA of a phase count files and bytes, with what one file and one byte cost
    learnt from the phase as it runs; neither is given until the source is counted (C(totals_known)), and
    while work remains the ETA is at least one second and the percentage at most 99. When a copy resumes,
    the figures count what this attempt walks (files rsync finds unchanged count as done at once).
  - While rsync copies, a second process reads and hashes the source files; the verification then walks
    both trees in two processes and reads the destination with direct I/O (or after dropping its cached
    pages), so it hashes what is on the disk. See C(docs/performance.md).
seealso:
  - module: storage.mobility.share_migration
'''

EXAMPLES = r'''
# On a data node, with the source and the destination mounted (the data_mover role does this).
- name: Start copying a share (or attach to the copy already running)
  storage.mobility.data_copy:
    job_id: projects-to-beta
    source: /mnt/mobility/projects-to-beta/source
    destination: /mnt/mobility/projects-to-beta/destination
    ignore_files: [lost+found, .snapshot]
  register: copy_job

- name: Wait for it, printing progress every poll
  storage.mobility.data_copy:
    job_id: projects-to-beta
    source: /mnt/mobility/projects-to-beta/source
    destination: /mnt/mobility/projects-to-beta/destination
    ignore_files: [lost+found, .snapshot]
    wait_seconds: 60
  register: copy_job
  until: copy_job.job.state != 'running'
  retries: 1440
  delay: 0

- name: Show the report
  ansible.builtin.debug:
    msg: "{{ copy_job.job.report.files }} files, {{ copy_job.job.report.bytes }} bytes, verified {{ copy_job.job.report.verified }}"

- name: Final pass in the maintenance window (vanished files are an error now)
  storage.mobility.data_copy:
    job_id: projects-to-beta-final
    source: /mnt/mobility/projects-to-beta/source
    destination: /mnt/mobility/projects-to-beta/destination
    final_pass: true
    hash_algorithm: sha256
    wait_seconds: 3600

- name: Cancel the copy
  storage.mobility.data_copy:
    job_id: projects-to-beta
    state: cancelled

- name: Forget the job
  storage.mobility.data_copy:
    job_id: projects-to-beta
    state: absent
'''

RETURN = r'''
job:
  description: The job after the run (in check mode, as it would be).
  returned: always
  type: dict
  contains:
    id:
      description: The job id.
      returned: always
      type: str
      sample: 9f3c1e0a-mig
    state:
      description: C(running), C(completed), C(failed), C(cancelled), or C(absent) when there is no such job.
      returned: always
      type: str
      sample: running
    phase:
      description:
        - C(scanning) (starting; the progress line says counting), C(copying), C(verifying) or C(done);
          where a failed job stopped. The source is counted while it is copied.
      returned: always
      type: str
      sample: copying
    progress:
      description:
        - Progress of the current phase. C(percent) and C(eta_seconds) come from files and bytes together;
          they, C(bytes_total) and C(files_total) are null while C(totals_known) is false (the source is still
          being counted; C(files_counted) is the count so far). C(files_done) and C(files_total) count entries
          (folders and links too). C(rate_bytes_per_s) and C(rate_files_per_s) are the phase's own averages
          (at the end, the copy's); C(phase_seconds) the time the phase has run; C(total_percent) the whole
          job's (copy and verification); C(phases) the phases that ended, each with C(phase), C(seconds),
          C(files), C(bytes), C(rate_bytes_per_s) and C(rate_files_per_s).
      returned: always
      type: dict
      sample: {percent: 45, bytes_done: 1234567, bytes_total: 2743482, files_done: 66, files_total: 100,
               rate_bytes_per_s: 12939428, eta_seconds: 10, totals_known: true, files_counted: 100,
               rate_files_per_s: 410, phase_seconds: 12.5, total_percent: 38, phases: []}
    progress_line:
      description:
        - The job's progress in one line, as the P(storage.mobility.data_mover#role) role prints it; in check
          mode, what would be done.
      returned: always
      type: str
      sample: "copying 45% (ETA 0:00:10), 1.2 MiB of 2.6 MiB, 66 of 100 files, 12.3 MiB/s, 5 files/s"
    report:
      description:
        - The report of the last run (contents of C(report.json)) once it has finished, else null.
        - Keys - C(job_id), C(verified), C(verification) (passed, failed, skipped, not run), C(source),
          C(destination), C(files), C(bytes), C(directories), C(symlinks), C(hash_algorithm) (the one used),
          C(differ) (path and attributes), C(missing), C(extra) (each capped at 1000, with C(differ_count),
          C(missing_count), C(extra_count)), C(copy_engine) (V(parallel), V(rsync), V(parallel, then rsync)
          when the verification of a parallel first copy sent rsync to copy again, or V(changes) for a changes
          pass), C(copy_seconds),
          C(verify_seconds), C(rsync_rc) and C(rsync_stats) (null and empty when rsync did not run),
          C(warnings), C(source_digest), C(destination_digest), C(error), C(hashing) (C(files_hashed),
          C(bytes_hashed), C(files_reused), C(bytes_reused), C(files_hashed_during_copy)), C(phases) (each phase's
          C(phase), C(seconds), C(files), C(bytes), C(rate_bytes_per_s), C(rate_files_per_s)).
        - C(source_seal) and C(destination_seal) - the seals of both trees (a digest of every entry's C(lstat),
          change time included) that the verification proved its hashes belong to; null unless verified.
        - C(changes_pass) - null unless a final pass; then C(incremental) (true for a changes pass, see
          O(copy_engine)) and C(full_pass_reason) (why the whole trees were copied and verified, else null); a
          changes pass adds C(entries_listed) (what changed in the source) and C(entries_compared) (those, the
          folders above them and everything below the folders among them). Its C(source_digest) and
          C(destination_digest) digest the entries compared (prefixed C(changes:)); its seals, C(files), C(bytes),
          C(directories) and C(symlinks) are of the whole trees.
        - C(migration_id) and C(pass_id) from O(report_signing), and C(signature) when the report was signed.
        - C(ignored) (the paths the ignore list left out, relative to the source, a folder with a trailing C(/), the
          first 100) and C(ignored_count) (all of them; both null when the count of the source did not finish),
          C(log_tail) (the last lines of the worker's log).
      returned: always
      type: dict
      sample: {job_id: 9f3c1e0a-mig, verified: true, verification: passed, files: 1200, bytes: 734003200,
               hash_algorithm: xxh128, differ: [], missing: [], extra: [], copy_seconds: 3.2, verify_seconds: 1.1,
               rsync_rc: 0, warnings: [], source_digest: "sha256:5d4c...", destination_digest: "sha256:5d4c...",
               source_seal: "seal1:sha256:8e1f...", destination_seal: "seal1:sha256:07ab..."}
    error:
      description: Why the job failed, else null.
      returned: always
      type: str
      sample: "Verification of /mnt/b against /mnt/a failed: 1 differ (first: data/f1 (hash))"
    folder:
      description: The job folder on the data node.
      returned: always
      type: str
      sample: /var/tmp/storage-mobility/jobs/9f3c1e0a-mig
    state_dir:
      description:
        - The folder holding the job folders (O(state_dir), or its default), as a real path.
        - The paths below are where the job keeps its files, whether or not the job exists yet; callers use
          them instead of building them (the C(storage.mobility.data_mover) role and the phase playbooks hand
          RV(job.status_file) to M(storage.mobility.share_migration)).
      returned: always
      type: str
      sample: /var/tmp/storage-mobility/jobs
    status_file:
      description: The job's status file (state, phase and progress, rewritten about once a second while it runs).
      returned: always
      type: str
      sample: /var/tmp/storage-mobility/jobs/9f3c1e0a-mig/status.json
    report_file:
      description: The file holding the report of the job's last run once it has finished.
      returned: always
      type: str
      sample: /var/tmp/storage-mobility/jobs/9f3c1e0a-mig/report.json
    worker_log:
      description: The worker's own log.
      returned: always
      type: str
      sample: /var/tmp/storage-mobility/jobs/9f3c1e0a-mig/worker.log
    rsync_log:
      description: What rsync printed besides its progress, when rsync ran.
      returned: always
      type: str
      sample: /var/tmp/storage-mobility/jobs/9f3c1e0a-mig/rsync.log
    final_job_id:
      description:
        - The job id the final pass of a migration whose phase-1 job is this one runs as (C(<id>-final)), in the
          same O(state_dir) so that it reuses this job's hashes.
      returned: always
      type: str
      sample: 9f3c1e0a-mig-final
    pid:
      description: Process id (and process group) of the job's worker.
      returned: when the job exists
      type: int
      sample: 41234
    interrupted:
      description: True when the job was running but its worker is gone; O(state=started) resumes it.
      returned: when the worker is gone
      type: bool
      sample: true
    final_pass:
      description: True when the job is a final pass (O(final_pass)).
      returned: when the job exists
      type: bool
      sample: false
    log_tail:
      description: The last lines of the worker's log, for a job that ended without a report (its worker was killed).
      returned: when the job is not running and has no report
      type: list
      elements: str
      sample: ["2026-12-01T16:01:04.547962Z first copy into the empty destination: 4 copying processes, hashing xxh128"]
removed:
  description: With O(state=absent), the job as it was before its folder was removed (its state, error, report and
    the end of its log), so that a caller can keep them.
  returned: when O(state=absent) removed a job folder
  type: dict
  sample: {id: 9f3c1e0a-mig, state: completed, report: {verified: true}}
actions:
  description: What the run did, or would do in check mode.
  returned: always
  type: list
  elements: str
  sample: ["start job mig1: copy /mnt/a to /mnt/b"]
'''

import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.storage.mobility.plugins.module_utils.data_copy.job import DataCopyJobs, MissingLibrary
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.rsync import DEFAULT_BASE_OPTIONS
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.signing import sign_job_report
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError


def signed(result, signing):
    """Sign the report in ``result`` for ``signing`` (see signing.py), or warn why not."""
    if signing:
        warning = sign_job_report(result['job'], signing)
        if warning:
            result['warnings'].append(warning)
    return result


def run(module, jobs):
    p = module.params
    signing = p['report_signing']
    if p['state'] == 'started':
        request = jobs.build_request(p['job_id'], p['source'], p['destination'], p['ignore_files'], p['check_hash'],
                                     p['hash_algorithm'], p['rsync_options'], p['rsync_base_options'],
                                     p['final_pass'], p['bwlimit'], p['reuse_hashes'], p['hash_cache_key'],
                                     p['copy_engine'], migration_id=(signing or {}).get('migration_id'),
                                     pass_id=(signing or {}).get('pass_id'), hosts=p['hosts'])
        result = jobs.start(request, p['wait_seconds'])
        if p['warn_writable_source'] and jobs.writable(request['source']):
            result['warnings'].append('Helper none mounts nothing, so read_only cannot be enforced: %s is writable'
                                      % request['source'])
        return signed(result, signing)
    if p['state'] == 'status':
        jobs.folder(p['job_id'])
        wait_seconds = 0 if module.check_mode else p['wait_seconds']
        return signed({'changed': False, 'job': jobs.wait(p['job_id'], wait_seconds), 'actions': [], 'warnings': []},
                      signing)
    if p['state'] == 'cancelled':
        return jobs.cancel(p['job_id'])
    return jobs.remove(p['job_id'])


def main():
    module = AnsibleModule(
        argument_spec=dict(
            job_id=dict(type='str', required=True),
            state=dict(type='str', choices=['started', 'status', 'cancelled', 'absent'], default='started'),
            source=dict(type='path'),
            destination=dict(type='path'),
            state_dir=dict(type='path'),
            ignore_files=dict(type='list', elements='str', default=['lost+found']),
            check_hash=dict(type='bool', default=True),
            hash_algorithm=dict(type='str', choices=['xxh128', 'sha256', 'blake3', 'blake2b'], default='xxh128'),
            rsync_options=dict(type='list', elements='str', default=[]),
            rsync_base_options=dict(type='list', elements='str', default=list(DEFAULT_BASE_OPTIONS)),
            final_pass=dict(type='bool', default=False, no_log=False),
            wait_seconds=dict(type='int', default=0),
            bwlimit=dict(type='str'),
            reuse_hashes=dict(type='bool', default=True),
            hash_cache_key=dict(type='str', no_log=False),
            hosts=dict(type='dict'),
            copy_engine=dict(type='str', choices=['auto', 'rsync'], default='auto'),
            keep_finished_days=dict(type='int', default=30),
            keep_finished_mb=dict(type='int', default=4096),
            warn_writable_source=dict(type='bool', default=False),
            report_signing=dict(type='dict', options=dict(
                migration_id=dict(type='str', required=True),
                pass_id=dict(type='str', required=True, no_log=False),
                key=dict(type='str', required=True, no_log=True),
            )),
        ),
        required_if=[('state', 'started', ['source', 'destination'])],
        supports_check_mode=True,
    )
    for name in ('keep_finished_days', 'keep_finished_mb'):
        if module.params[name] < 0:
            module.fail_json(msg='Invalid %s %d: expected 0 (no bound) or more' % (name, module.params[name]))
    try:
        result = run(module, DataCopyJobs(module.params['state_dir'], check_mode=module.check_mode,
                                          keep_finished_days=module.params['keep_finished_days'],
                                          keep_finished_mb=module.params['keep_finished_mb']))
    except MissingLibrary as exc:
        module.fail_json(msg=missing_required_lib(exc.library), error=exc.message, error_type=exc.error_type)
    except StorageError as exc:
        module.fail_json(msg=exc.message, error_type=exc.error_type, **exc.details)
    except Exception as exc:  # an unexpected failure: report it whole rather than a bare traceback
        module.fail_json(msg='Unexpected error: %s' % exc, exception=traceback.format_exc())
    job = result['job']
    warnings = result.pop('warnings') + ((job.get('report') or {}).get('warnings') or [])
    for warning in sorted(set(warnings), key=warnings.index):
        module.warn(warning)
    if job['state'] == 'failed' and module.params['state'] in ('started', 'status'):
        module.fail_json(msg=job['error'] or 'Data copy job %s failed' % job['id'], **result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
