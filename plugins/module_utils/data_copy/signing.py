# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy reports bound to one pass of one migration: HMAC-SHA256 signatures.

Each time the share migration manager hands out a copy plan (phase 1, and each final pass) it
draws a *pass*: an id and a random key, kept in the migration's record and put in the plan. The
data copy job records the migration id and the pass id in its report; the ``data_copy`` module
signs the report of a completed job with the key, over a canonical encoding of the fields that
say what was proven (SIGNED_FIELDS), but only when the job was run for that very migration and
pass. The manager takes a report as proof of a verified copy only with a valid signature made
with the key of the pass it is waiting for.

This is an integrity binding of a report to one migration and one pass: a report made by hand,
edited after signing, or taken from another migration or another pass does not verify. It is not
a secret against whoever can read the migration records or the controller's output (root on the
controller or on the storage host can always sign).
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import binascii
import hashlib
import hmac
import json
import os

SIGNATURE_PREFIX = 'hmac-sha256:'
SIGNATURE_FORMAT = 'storage.mobility copy report 1'
# What a signature vouches for: whose report it is, what the job did, what the verification proved.
SIGNED_FIELDS = ('migration_id', 'job_id', 'pass_id', 'final_pass', 'state', 'verified', 'verification',
                 'hash_algorithm', 'source_digest', 'destination_digest', 'source_seal', 'destination_seal',
                 'files', 'bytes', 'directories', 'symlinks', 'differ_count', 'missing_count', 'extra_count',
                 'ignore_files')


def new_pass(final):
    """A new pass: ``{'id': ..., 'key': ..., 'final': bool}`` with 128 random bits of id and 256 of key."""
    return {'id': binascii.hexlify(os.urandom(16)).decode('ascii'),
            'key': binascii.hexlify(os.urandom(32)).decode('ascii'),
            'final': bool(final)}


def canonical_report(report):
    """The bytes a signature covers: the SIGNED_FIELDS of ``report`` (null where absent) as JSON with
    sorted keys and no spaces, after a format line."""
    fields = dict((name, report.get(name)) for name in SIGNED_FIELDS)
    text = json.dumps(fields, sort_keys=True, separators=(',', ':'), ensure_ascii=True)
    return (SIGNATURE_FORMAT + '\n' + text).encode('ascii')


def report_signature(report, key):
    """``hmac-sha256:<hex>`` of the canonical report under ``key`` (text)."""
    mac = hmac.new(key.encode('utf-8'), canonical_report(report), hashlib.sha256)
    return SIGNATURE_PREFIX + mac.hexdigest()


def sign_report(report, key):
    """A copy of ``report`` with its ``signature``."""
    signed = dict(report)
    signed['signature'] = report_signature(report, key)
    return signed


def signature_valid(report, key):
    """True when ``report`` carries a signature made with ``key`` over its present fields."""
    signature = report.get('signature')
    if not isinstance(signature, str) or not key:
        return False
    try:
        expected = report_signature(report, key)
    except (TypeError, ValueError):
        return False
    return hmac.compare_digest(signature, expected)


def sign_job_report(job, signing):
    """Sign the report of a data copy job (the module's ``job`` result) for ``signing`` =
    ``{migration_id, pass_id, key}``. Returns None when the report was signed, else why not (a
    warning): only a completed job's report of this very migration, pass and job is signed."""
    report = job.get('report')
    if job.get('state') != 'completed' or not isinstance(report, dict):
        return None
    for name in ('migration_id', 'pass_id'):
        if report.get(name) != signing.get(name):
            return ('The report of data copy job %s was not signed: it was made for %s %s, not %s; run the job '
                    'again for this pass' % (job.get('id'), name.replace('_', ' '), report.get(name),
                                             signing.get(name)))
    if report.get('job_id') != job.get('id'):
        return ('The report of data copy job %s was not signed: it names job %s'
                % (job.get('id'), report.get('job_id')))
    job['report'] = sign_report(report, signing['key'])
    return None
