# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action plugin of every module that takes ``backends``: runs the module as Ansible's ``normal``
action does, after filling the ssh options of backends that name an inventory host
(plugin_utils/inventory_ssh.py). Check mode and async work as for any module."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

from ansible_collections.storage.mobility.plugins.plugin_utils.inventory_ssh import InventoryHostError, resolve_backends


class BackendsAction(ActionBase):
    """Fill ``ssh.inventory_host`` from the inventory, then run the module."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(BackendsAction, self).run(tmp, task_vars)
        del tmp
        task_vars = task_vars or {}
        args = dict(self._task.args)
        try:
            backends, warnings = resolve_backends(args.get('backends'), task_vars.get('hostvars') or {})
        except InventoryHostError as exc:
            raise AnsibleActionFail(str(exc))
        if backends is not args.get('backends'):
            args['backends'] = backends
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result = merge_hash(result, self._execute_module(module_args=args, task_vars=task_vars, wrap_async=wrap_async))
        if warnings:
            result['warnings'] = list(result.get('warnings') or []) + warnings
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result
