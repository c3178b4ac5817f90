# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A backend's ssh options taken from an inventory host (``ssh.inventory_host``), on the controller.

The modules run where their task runs and never see the inventory. The collection's action plugins
(plugins/action/, one per module of the ``mobility`` action group) call :func:`resolve_backends`
before the module is sent: for every backend whose ``ssh`` names an ``inventory_host``, the options
the backend leaves out are filled from that host's connection variables, as Ansible's own ssh
connection would use them. What the backend sets itself always wins. The module then receives plain
ssh options and validates them as usual (module_utils/config.py); ``~`` in a file name is expanded
there (the options are of type ``path``), on the machine that runs the module.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import copy
import shlex

#: ssh option -> the inventory variables that give it, first found wins (Ansible's names and aliases)
VARIABLES = (
    ('address', ('ansible_host', 'ansible_ssh_host')),
    ('port', ('ansible_port', 'ansible_ssh_port')),
    ('user', ('ansible_user', 'ansible_ssh_user')),
    ('private_key_file', ('ansible_ssh_private_key_file', 'ansible_private_key_file')),
    ('become', ('ansible_become',)),
)
#: inventory variables that hold ssh's own command line options (``-o Name=value``)
ARGUMENT_VARIABLES = ('ansible_ssh_common_args', 'ansible_ssh_extra_args')
#: the passwords an inventory may hold: never used (the collection's ssh runs with BatchMode=yes)
PASSWORD_VARIABLES = ('ansible_password', 'ansible_ssh_pass', 'ansible_ssh_password', 'ansible_become_password',
                      'ansible_become_pass', 'ansible_sudo_pass')
_TRUE = ('1', 'yes', 'on', 'true', 't', 'y')
_FALSE = ('0', 'no', 'off', 'false', 'f', 'n', '')


class InventoryHostError(Exception):
    """An inventory host that cannot give a backend's ssh options; the message names both."""


def _as_bool(value, what):
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InventoryHostError('%s is %r: expected a boolean' % (what, value))


def ssh_arguments(text):
    """The ``-o Name=value`` options in an ssh command line fragment: {lower-case name: value}."""
    found = {}
    try:
        words = shlex.split(text or '')
    except ValueError as exc:
        raise InventoryHostError('cannot read its ssh arguments %r: %s' % (text, exc))
    index = 0
    while index < len(words):
        word = words[index]
        option = None
        if word == '-o' and index + 1 < len(words):
            option = words[index + 1]
            index += 1
        elif word.startswith('-o') and len(word) > 2:
            option = word[2:]
        if option:
            name, sep, value = option.partition('=')
            if not sep:
                name, sep, value = option.partition(' ')
            if sep:
                found.setdefault(name.strip().lower(), value.strip())
        index += 1
    return found


def options_from_host(name, host_vars):
    """The ssh options (those this collection knows) that the inventory host ``name`` gives, and the
    warnings to show. ``host_vars`` is that host's variables (``hostvars[name]``)."""
    warnings = []
    connection = host_vars.get('ansible_connection')
    if connection not in (None, '', 'ssh', 'ansible.builtin.ssh', 'smart', 'paramiko', 'ansible.builtin.paramiko_ssh',
                          'paramiko_ssh'):
        raise InventoryHostError('it uses connection %s, not ssh: declare the backend with transport: local when '
                                 'its pools are on the machine that runs the modules' % connection)
    options = {'address': name}
    for option, variables in VARIABLES:
        for variable in variables:
            value = host_vars.get(variable)
            if value is None or value == '':
                continue
            if option == 'port':
                try:
                    value = int(value)
                except (TypeError, ValueError):
                    raise InventoryHostError('%s is %r: expected a TCP port' % (variable, value))
            elif option == 'become':
                value = _as_bool(value, variable)
            else:
                value = str(value)
            options[option] = value
            break
    if options.get('become'):
        method = host_vars.get('ansible_become_method') or 'sudo'
        if method not in ('sudo', 'ansible.builtin.sudo'):
            raise InventoryHostError('ansible_become_method is %s: the collection becomes root on a storage host '
                                     'with sudo -n only' % method)
        user = host_vars.get('ansible_become_user') or 'root'
        if user != 'root':
            raise InventoryHostError('ansible_become_user is %s: the collection needs root on a storage host' % user)
    arguments = {}
    for variable in ARGUMENT_VARIABLES:
        for key, value in ssh_arguments(host_vars.get(variable)).items():
            arguments.setdefault(key, value)
    known_hosts = arguments.get('userknownhostsfile')
    if known_hosts:
        first = shlex.split(known_hosts)[0] if known_hosts.strip() else ''
        if first and first.lower() != 'none':
            options['known_hosts_file'] = first
    checking = (arguments.get('stricthostkeychecking') or '').lower()
    if checking == 'accept-new':
        options['host_key_checking'] = 'accept-new'
    elif checking in ('no', 'off'):
        warnings.append('inventory host %s turns host key checking off (StrictHostKeyChecking=%s); the collection '
                        'still checks host keys (strict)' % (name, checking))
    passwords = sorted(v for v in PASSWORD_VARIABLES if host_vars.get(v) not in (None, ''))
    if passwords:
        warnings.append('inventory host %s has %s: the collection never uses passwords (keys or the ssh agent only)'
                        % (name, ', '.join(passwords)))
    return options, warnings


def resolve_backends(backends, hostvars):
    """``backends`` with every ``ssh.inventory_host`` replaced by the options that host gives (what
    the backend sets itself wins), and the warnings to show. Unchanged (the same object) when no
    backend names an inventory host. Raises InventoryHostError naming the backend and the host."""
    if not isinstance(backends, list) or not any(
            isinstance(b, dict) and isinstance(b.get('ssh'), dict) and b['ssh'].get('inventory_host') is not None
            for b in backends):
        return backends, []
    resolved, warnings = [], []
    for backend in backends:
        ssh = backend.get('ssh') if isinstance(backend, dict) else None
        if not isinstance(ssh, dict) or ssh.get('inventory_host') is None:
            resolved.append(backend)
            continue
        name = ssh['inventory_host']
        label = 'Backend %s: ssh inventory_host %s' % (backend.get('name'), name)
        if not isinstance(name, str) or not name:
            raise InventoryHostError('%s: expected the name of an inventory host' % label)
        if name not in hostvars:
            raise InventoryHostError('%s is not in the inventory (no such host; groups are not accepted)' % label)
        try:
            options, notes = options_from_host(name, hostvars[name])
        except InventoryHostError as exc:
            raise InventoryHostError('%s: %s' % (label, exc))
        warnings.extend(notes)
        backend = copy.deepcopy(backend)
        merged = dict(options)
        merged.update((k, v) for k, v in backend['ssh'].items() if v is not None and k != 'inventory_host')
        backend['ssh'] = merged
        resolved.append(backend)
    return resolved, warnings
