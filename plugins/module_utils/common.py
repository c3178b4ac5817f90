# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module shares: the backends option, the wait options, and error reporting."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback

from ansible_collections.storage.mobility.plugins.module_utils.config import (
    EXPORT_HELPERS, OPENSTACK_DRIVERS, OPENSTACK_INTERFACES, TRANSPORTS)
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.registry import share_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, CommandError, InvalidRequest, NotFound, StorageError, WaitTimeout)
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner


def backends_argument_spec():
    return dict(
        backends=dict(type='list', elements='dict', required=True, options=dict(
            name=dict(type='str', required=True),
            driver=dict(type='str', default='posix', choices=share_driver_names() + list(OPENSTACK_DRIVERS)),
            host=dict(type='str', default='localhost'),
            transport=dict(type='str', choices=list(TRANSPORTS)),
            pools=dict(type='dict'),
            export=dict(type='dict', options=dict(
                helper=dict(type='str', default='none', choices=list(EXPORT_HELPERS)),
                root=dict(type='path'),
            )),
            migration_ignore_files=dict(type='list', elements='str'),
            replication_domain=dict(type='str'),
            cloud=dict(type='str'),
            auth=dict(type='dict', no_log=True),
            auth_type=dict(type='str'),
            region_name=dict(type='str'),
            interface=dict(type='str', choices=list(OPENSTACK_INTERFACES)),
            cacert=dict(type='path'),
            validate_certs=dict(type='bool'),
            client_cert=dict(type='path'),
            client_key=dict(type='path', no_log=False),
            endpoint_override=dict(type='str'),
            api_version=dict(type='str'),
        )),
    )


def wait_argument_spec(default_timeout=3600):
    return dict(
        wait=dict(type='bool', default=True),
        wait_timeout=dict(type='int', default=default_timeout),
        wait_sleep=dict(type='int', default=5),
    )


def make_context(module):
    runner = CommandRunner(module.run_command)
    return Context(module.params['backends'], runner=runner, check_mode=module.check_mode)


def run_module(module, action):
    """Run ``action(ctx)`` and exit with its result; typed errors become fail_json with their facts."""
    try:
        ctx = make_context(module)
        result = action(ctx)
    except StorageError as exc:
        facts = dict(exc.details)
        facts['error_type'] = {InvalidRequest: 'invalid_request', NotFound: 'not_found', Busy: 'busy',
                               WaitTimeout: 'timeout', CommandError: 'command'}.get(type(exc), 'storage')
        if 'result' in facts and isinstance(facts['result'], dict) and 'share' not in facts:
            facts['share'] = facts.pop('result')
        module.fail_json(msg=exc.message, **facts)
    except Exception as exc:  # an unexpected failure: report it whole rather than a bare traceback
        module.fail_json(msg='Unexpected error: %s' % exc, exception=traceback.format_exc())
    diff = result.pop('diff', None)
    if module._diff and diff is not None:
        result['diff'] = diff
    warnings = result.pop('warnings', None) or []
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)
