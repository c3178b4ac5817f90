# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every service shares: how an implementation names itself when it refuses a request.

A service is the interface of one resource kind (services/share.py, share_migration.py,
replica.py, volume.py, volume_migration.py). Its implementations are the collection's own managers
(managers/) and the OpenStack ones (manila/, cinder/); services/registry.py picks one per run.
Every implementation of a kind has the same method signatures: the wait options travel in the
Context (ctx.waits), never as arguments.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest


def declared_drivers(ctx):
    """The drivers of every declared backend, for messages that say what would serve a request."""
    return ', '.join(sorted(set(b.driver for b in ctx.backends.backends))) or 'none'


def local_backends(ctx, pool=None):
    """How to name the collection's own backends in a message: the one pool names, or all."""
    backends = ctx.backends.local()
    if pool is not None:
        named = [b for b in backends if b.host == pool.host and b.name == pool.backend]
        backends = named or backends
    if not backends:
        return "the collection's own drivers"
    return ', '.join('backend %s with driver %s' % (b.name, b.driver) for b in backends)


def not_served(ctx, what, kind, driver, pool=None):
    """InvalidRequest from the collection's own implementation of a kind its drivers do not serve yet.

    It names the backends that would have served the request (the one ``pool`` names, or every
    local one) and the driver that does serve ``kind``, so that nobody reads it as a fault of
    one particular driver."""
    own = ''
    if ctx.backends.local():
        own = "%s on the collection's own drivers (%s) are not supported yet; " % (kind, local_backends(ctx, pool))
    return InvalidRequest('Cannot %s: %s%s need a backend with driver %s (declared drivers: %s)'
                          % (what, own, kind, driver, declared_drivers(ctx)))


def refuse_options(what, served_by, options, why):
    """InvalidRequest for the options (name, value) that are set although served_by cannot honour them."""
    given = [name for name, value in options if value]
    if given:
        raise InvalidRequest('Cannot %s: %s %s not supported by %s, %s'
                             % (what, ', '.join(given), 'is' if len(given) == 1 else 'are', served_by, why))
