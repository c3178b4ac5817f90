# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transport registry: a backend's ``transport`` value to the class that reaches its host.

A new transport is one new file in this folder and one line here; no driver changes.
OpenStack backends (``transport: rest``) have no file transport: their services talk to the API.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.ssh import SshTransport

TRANSPORTS = {
    LocalTransport.name: LocalTransport,
    SshTransport.name: SshTransport,
}


def transport_names():
    return sorted(TRANSPORTS)


def transport_for(backend, runner):
    """A new transport instance for the host of ``backend``; an unknown transport names the choices."""
    name = getattr(backend, 'transport', None) or LocalTransport.name
    cls = TRANSPORTS.get(name)
    if cls is None:
        raise InvalidRequest('Backend %s uses transport %r, which has no file transport: known transports are %s'
                             % (backend.name, name, ', '.join(transport_names())))
    # A transport that needs the backend's options (ssh: address, user, key...) builds itself from it.
    if hasattr(cls, 'from_backend'):
        return cls.from_backend(backend, runner)
    return cls(runner)
