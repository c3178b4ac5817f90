# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where a data copy job lives, as the callers of the data node's copy engine see it.

The one place that knows the job layout outside the worker: the default state folder (root's or a
user's), ``<state_dir>/<job_id>/`` and the files in it (named in ``state.py``), the job id of a
final pass (``<id>-final``) and the progress keys of ``status.json``. The data_copy module returns
these paths in every result (see ``job_paths``); the role and the playbooks use what it returned,
and the migration managers call ``read_live_progress`` and ``final_job`` instead of spelling any of
it out.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import state as state_lib

ROOT_STATE_DIR = '/var/tmp/storage-mobility/jobs'
USER_STATE_DIR = '~/.cache/storage-mobility/jobs'
# The final pass of a migration runs as the job <phase-1 job id> + FINAL_SUFFIX in the same state
# folder, so that it finds the phase-1 hashes (a final pass taken again keeps the id, with a new pass).
FINAL_SUFFIX = '-final'
# What read_live_progress returns besides ``state``: the progress fields and the phase.
LIVE_PROGRESS_KEYS = state_lib.PROGRESS_FIELDS + ('phase',)


def default_state_dir():
    """Where job folders live: a system folder for root, the user's cache otherwise."""
    if os.geteuid() == 0:
        return ROOT_STATE_DIR
    return os.path.expanduser(USER_STATE_DIR)


def job_paths(state_dir, job_id):
    """The paths of job ``job_id`` in ``state_dir`` that callers may read (the job need not exist)."""
    folder = os.path.join(state_dir, job_id)
    return {'state_dir': state_dir, 'folder': folder,
            'status_file': os.path.join(folder, state_lib.STATUS_FILE),
            'report_file': os.path.join(folder, state_lib.REPORT_FILE),
            'worker_log': os.path.join(folder, state_lib.WORKER_LOG),
            'rsync_log': os.path.join(folder, state_lib.RSYNC_LOG)}


def final_job_id(job_id):
    """The job id of the final pass that follows the (phase-1) job ``job_id``: ``<job_id>-final``."""
    return job_id + FINAL_SUFFIX


def final_job(copy_job):
    """The copy job of the final pass next to ``copy_job`` (a dict with ``job_id`` and ``status_file``
    as the data_copy module returned them, and any other keys, kept); None without both."""
    job_id = (copy_job or {}).get('job_id')
    status_file = (copy_job or {}).get('status_file')
    if not job_id or not status_file:
        return None
    final_id = final_job_id(job_id)
    state_dir = os.path.dirname(os.path.dirname(status_file))
    return dict(copy_job, job_id=final_id, status_file=job_paths(state_dir, final_id)['status_file'])


def reported_progress(progress, state=None, phase=None):
    """The progress keys of ``progress`` (a job's progress as the data_copy module returns it, handed
    on by the phase playbooks), with ``state`` and ``phase``: what share_info shows when the status file
    is on another machine. Unknown keys are dropped; an empty dict when ``progress`` is not a dict."""
    if not isinstance(progress, dict):
        return {}
    result = dict((k, progress.get(k)) for k in LIVE_PROGRESS_KEYS if progress.get(k) is not None)
    if state is not None:
        result['state'] = state
    if phase is not None:
        result['phase'] = phase
    return result


def read_live_progress(status_file):
    """The job's ``state``, ``phase`` and progress read from its status file, when that file is on
    this machine; None when it is not there or not readable."""
    if not status_file or not os.path.isfile(status_file):
        return None
    try:
        status = state_lib.read_json(status_file)
    except (IOError, OSError):
        return None
    if status is None:
        return None
    progress = status.get('progress') if isinstance(status.get('progress'), dict) else status
    result = dict((k, progress.get(k)) for k in LIVE_PROGRESS_KEYS if progress.get(k) is not None)
    result['state'] = status.get('state')
    return result
