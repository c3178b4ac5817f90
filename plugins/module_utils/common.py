# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every module shares: the backends option, the wait options, and error reporting."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import traceback

from ansible.module_utils.basic import AnsibleModule, env_fallback

from ansible_collections.storage.mobility.plugins.module_utils import events as events_lib
from ansible_collections.storage.mobility.plugins.module_utils import metrics as metrics_lib

from ansible_collections.storage.mobility.plugins.module_utils.config import (
    DATA_PATHS, EXPORT_HELPERS, OPENSTACK_DRIVERS, OPENSTACK_INTERFACES, SSH_HOST_KEY_CHECKING, TRANSPORTS)
from ansible_collections.storage.mobility.plugins.module_utils.context import Context
from ansible_collections.storage.mobility.plugins.module_utils.drivers.share.registry import share_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.drivers.volume.registry import volume_driver_names
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
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
                inventory_host=dict(type='str'),
                address=dict(type='str'),
                user=dict(type='str'),
                port=dict(type='int'),
                private_key_file=dict(type='path', no_log=False),
                known_hosts_file=dict(type='path'),
                host_key_checking=dict(type='str', default='strict', choices=list(SSH_HOST_KEY_CHECKING)),
                become=dict(type='bool', default=False),
                direct_address=dict(type='str'),
                direct_key_file=dict(type='path', no_log=False),
                data_node_key_file=dict(type='path', no_log=False),
            )),
            data_path=dict(type='str', choices=list(DATA_PATHS)),
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


def events_argument_spec():
    """``events``: where the run also sends its journal lines and writes its metrics (docs/events.md).
    Set once for every module through ``module_defaults``, or through the environment."""
    return dict(events=dict(type='dict', apply_defaults=True, options=dict(
        webhook_url=dict(type='str', no_log=True, fallback=(env_fallback, [events_lib.WEBHOOK_ENV])),
        webhook_timeout=dict(type='float', default=2.0),
        webhook_retries=dict(type='int', default=2),
        webhook_validate_certs=dict(type='bool', default=True),
        metrics_dir=dict(type='path', fallback=(env_fallback, [events_lib.METRICS_DIR_ENV])),
    )))


def configure_events(params):
    """Set up this process's webhook from the ``events`` option; True when metrics are wanted."""
    options = params.get('events') or {}
    webhook = None
    if options.get('webhook_url'):
        if options.get('webhook_timeout') is None or options['webhook_timeout'] <= 0:
            raise InvalidRequest('Invalid events.webhook_timeout %r: a number of seconds above 0'
                                 % options.get('webhook_timeout'))
        if options.get('webhook_retries') is None or not 0 <= options['webhook_retries'] <= 10:
            raise InvalidRequest('Invalid events.webhook_retries %r: a whole number from 0 to 10'
                                 % options.get('webhook_retries'))
        if events_lib.safe_url(options['webhook_url']).split('://')[0] not in ('http', 'https'):
            raise InvalidRequest('Invalid events.webhook_url %s: an http:// or https:// URL'
                                 % events_lib.safe_url(options['webhook_url']))
        webhook = events_lib.Webhook(options['webhook_url'], timeout=options['webhook_timeout'],
                                     retries=options['webhook_retries'],
                                     validate_certs=options.get('webhook_validate_certs', True))
    events_lib.configure_webhook(webhook)
    return options.get('metrics_dir')


def event_warnings(ctx, metrics_dir):
    """The run's warnings about its event outputs, after writing the metrics files (not in check
    mode): journal lines not written, lines the webhook did not take, metrics files not written."""
    warnings = []
    if ctx is None:
        return warnings
    if metrics_dir and not ctx.check_mode:
        # Imported only for a run that writes metrics (every module call compiles what it imports).
        from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager
        from ansible_collections.storage.mobility.plugins.module_utils.managers.volume import LocalVolumeManager
    if metrics_dir and not ctx.check_mode and ctx.repo.stores:
        try:
            warnings.extend(metrics_lib.write_pool_metrics(ctx, metrics_dir, ShareManager(ctx).view))
        except Exception as exc:  # metrics never fail a step
            warnings.append('The metrics files in %s were not written: %s' % (metrics_dir, exc))
    if metrics_dir and not ctx.check_mode:
        try:
            volumes = LocalVolumeManager(ctx)
            if volumes.repo is not None:
                warnings.extend(metrics_lib.write_volume_metrics(metrics_dir, volumes))
        except Exception as exc:  # metrics never fail a step
            warnings.append('The volume metrics files in %s were not written: %s' % (metrics_dir, exc))
    for error in ctx.repo.unreachable():
        warnings.append('%s: the pools of storage host %s were skipped in this run' % (error, error.details.get('host')))
    for event, error in ctx.repo.journal_failures():
        warnings.append('Event %s was not written to the event journal %s' % (event, error))
    webhook = events_lib.current_webhook()
    if webhook is not None:
        warnings.extend(webhook.warnings())
    return warnings


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
    argument_spec.update(events_argument_spec())
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
    ctx = metrics_dir = None
    try:
        metrics_dir = configure_events(module.params)
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
        # A failed step may have changed a record (migration_error): the figures still follow it.
        for warning in event_warnings(ctx, metrics_dir):
            module.warn(warning)
        module.fail_json(msg=exc.message, **facts)
    except Exception as exc:  # an unexpected failure: report it whole rather than a bare traceback
        module.fail_json(msg='Unexpected error: %s' % exc, exception=traceback.format_exc())
    diff = result.pop('diff', None)
    if module._diff and diff is not None:
        result['diff'] = diff
    warnings = result.pop('warnings', None) or []
    warnings.extend(event_warnings(ctx, metrics_dir))
    for warning in warnings:
        module.warn(warning)
    module.exit_json(**result)
