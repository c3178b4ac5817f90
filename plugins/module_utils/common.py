# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module shares: the backends option, the wait options, and error reporting."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.storage.mobility.plugins.module_utils.config import (
    EXPORT_HELPERS, OPENSTACK_DRIVERS, OPENSTACK_INTERFACES, SSH_HOST_KEY_CHECKING, TRANSPORTS)
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.registry import share_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.registry import volume_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner
from ansible_collections.storage.mobility.plugins.module_utils.wait import Waits


def driver_names():
    """The choices of a backend's ``driver``: the share drivers, the volume drivers, the OpenStack services."""
    return share_driver_names() + volume_driver_names() + list(OPENSTACK_DRIVERS)


def backends_argument_spec():
    return dict(
        backends=dict(type='list', elements='dict', required=True, options=dict(
            name=dict(type='str', required=True),
            driver=dict(type='str', default='posix', choices=driver_names()),
            host=dict(type='str', default='localhost'),
            transport=dict(type='str', choices=list(TRANSPORTS)),
            ssh=dict(type='dict', options=dict(
                address=dict(type='str'),
                user=dict(type='str'),
                port=dict(type='int'),
                private_key_file=dict(type='path', no_log=False),
                known_hosts_file=dict(type='path'),
                host_key_checking=dict(type='str', default='strict', choices=list(SSH_HOST_KEY_CHECKING)),
                become=dict(type='bool', default=False),
            )),
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


def mobility_module(options, wait=False, states=None, **kwargs):
    """The AnsibleModule of a collection module: ``backends``, the wait options when ``wait``, then ``options``.

    ``states``: the choices of the module's ``state`` option, the first being its default. Every
    module supports check mode; ``kwargs`` go to AnsibleModule (mutually_exclusive, required_if)."""
    argument_spec = backends_argument_spec()
    if wait:
        argument_spec.update(wait_argument_spec())
    if states:
        argument_spec['state'] = dict(type='str', choices=list(states), default=states[0])
    argument_spec.update(options)
    return AnsibleModule(argument_spec=argument_spec, supports_check_mode=True, **kwargs)


def make_context(module):
    """The run's Context: the declared backends, check mode, and the wait options (when the module has them)."""
    runner = CommandRunner(module.run_command)
    ctx = Context(module.params['backends'], runner=runner, check_mode=module.check_mode)
    ctx.waits = Waits.from_params(module.params, module.check_mode)
    return ctx


def run_module(module, action):
    """Run ``action(ctx, module.params)`` and exit with its result; typed errors become fail_json with their facts.

    ``error_type`` is the error class's own (errors.py ERROR_TYPES)."""
    try:
        ctx = make_context(module)
        try:
            result = action(ctx, module.params)
        finally:
            ctx.close()
    except StorageError as exc:
        facts = dict(exc.details)
        facts['error_type'] = exc.error_type
        if 'result' in facts and isinstance(facts['result'], dict) and 'share' not in facts:
            facts['share'] = facts.pop('result')
        module.fail_json(msg=exc.message, **facts)
    except Exception as exc:  # an unexpected failure: report it whole rather than a bare traceback
        module.fail_json(msg='Unexpected error: %s' % exc, exception=traceback.format_exc())
    diff = result.pop('diff', None)
    if module._diff and diff is not None:
        result['diff'] = diff
    warnings = result.pop('warnings', None) or []
    for event, error in ctx.repo.journal_failures():
        warnings.append('Event %s was not written to the event journal %s' % (event, error))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)
