# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transport registry: a backend's ``transport`` value to the class that reaches its host.

A new transport is one new file in this folder and one loader here; no driver changes. A transport
is imported when a backend uses it (a run on local pools never compiles the ssh transport).
OpenStack backends (``transport: rest``) have no file transport: their services talk to the API.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest

LOCAL = 'local'


def _local():
    from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
    return LocalTransport


def _ssh():
    from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import SshTransport
    return SshTransport


#: transport name -> a function that imports and returns its class
TRANSPORTS = {
    LOCAL: _local,
    'ssh': _ssh,
}


def transport_names():
    return sorted(TRANSPORTS)


def transport_for(backend, runner):
    """A new transport instance for the host of ``backend``; an unknown transport names the choices."""
    name = getattr(backend, 'transport', None) or LOCAL
    load = TRANSPORTS.get(name)
    if load is None:
        raise InvalidRequest('Backend %s uses transport %r, which has no file transport: known transports are %s'
                             % (backend.name, name, ', '.join(transport_names())))
    cls = load()
    # A transport that needs the backend's options (ssh: address, user, key...) builds itself from it.
    if hasattr(cls, 'from_backend'):
        return cls.from_backend(backend, runner)
    return cls(runner)
