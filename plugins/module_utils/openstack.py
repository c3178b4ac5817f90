# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""OpenStack services (Manila, Cinder, ...) reached through openstacksdk, for any ``rest`` backend.

Service-neutral: a backend entry with an OpenStack driver carries the usual connection options
(``cloud`` from clouds.yaml, or ``auth`` + ``auth_type``, ``region_name``, ``interface``,
``cacert``, ``validate_certs``, ``client_cert``, ``client_key``, ``endpoint_override``) and
``api_version``, a cap on the microversions the collection may use. ``OpenStackClient`` opens one
connection per backend and service, reads the service's version document once, picks a
microversion per call (the highest one both sides speak, or a clear error when the cloud is too
old for a feature), and turns HTTP errors into the collection's typed errors with the status and
the body.

Calls go through the service's openstacksdk proxy (``conn.block_storage``,
``conn.shared_file_system``) wherever it has them (``OpenStackClient.sdk``), at the microversion
the collection picked (set as the proxy's default microversion for that one call); ``rest_fields``
turns the resources it returns into the REST dicts the managers read. ``OpenStackClient.request``
(raw REST through the same proxy) stays only for what the SDK lacks; each caller says what.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import re
import traceback
import types

from urllib.parse import quote

from ansible.module_utils.basic import missing_required_lib

from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    Busy, InvalidRequest, NotFound, StorageError)


def openstack_connect():
    """openstacksdk's ``connect``, imported on first use: importing the SDK takes 1.5-4 s, and
    every module imports this file (through services/registry.py) even when only the collection's
    own drivers are declared. A StorageError naming the missing library when it is not installed."""
    try:
        import openstack
    except ImportError:
        raise StorageError(missing_required_lib('openstacksdk'), exception=traceback.format_exc())
    return openstack.connect


#: the service types this module knows: the openstacksdk proxy attribute and a readable name
SERVICES = {
    'shared-file-system': ('shared_file_system', 'Manila'),
    'block-storage': ('block_storage', 'Cinder'),
}

#: the connection options of an OpenStack backend entry (see the backends doc fragment)
CONNECTION_OPTIONS = ('cloud', 'auth', 'auth_type', 'region_name', 'interface', 'cacert', 'validate_certs',
                      'client_cert', 'client_key', 'endpoint_override', 'api_version')
INTERFACES = ('public', 'internal', 'admin')
_VERSION_RE = re.compile(r'^(\d+)\.(\d+)$')
_UUID_RE = re.compile(r'^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$')


def is_uuid(value):
    """True for an OpenStack id (a UUID, with or without dashes); names are looked up instead."""
    return isinstance(value, str) and bool(_UUID_RE.match(value))


def one_by_name_or_id(kind, ref, named, by_id, service, backend):
    """The one ``kind`` (volume, share) among ``named`` (those carrying the name ``ref``), else the one
    with id ``ref`` (``by_id``), else None; InvalidRequest when the name is ambiguous."""
    if len(named) > 1:
        raise InvalidRequest('%s name %r is ambiguous in %s of backend %s: %ss %s carry it; use the %s id'
                             % (kind.capitalize(), ref, service, backend.name, kind,
                                ', '.join(item['id'] for item in named), kind))
    if named:
        return named[0]
    return by_id(ref) if is_uuid(ref) else None


def required(kind, ref, found, service, backend):
    """``found``, or NotFound naming the ``kind`` looked up by name or id."""
    if found is None:
        raise NotFound('Unknown %s %r: %s of backend %s has no %s with this name or id'
                       % (kind, ref, service, backend.name, kind))
    return found


def path_segment(value):
    """``value`` quoted for one segment of a REST path (a '/' or '?' cannot escape it)."""
    return quote(str(value), safe='')


def parse_version(value, what='microversion'):
    """``'2.29'`` -> ``(2, 29)``; anything else raises InvalidRequest naming ``what``."""
    if isinstance(value, tuple):
        return value
    match = _VERSION_RE.match(str(value).strip()) if value is not None else None
    if not match:
        raise InvalidRequest('Invalid %s %r: expected MAJOR.MINOR, for example 2.65' % (what, value))
    return int(match.group(1)), int(match.group(2))


def format_version(version):
    return '%d.%d' % version


def api_message(body):
    """The human message of an OpenStack error body (``{"badRequest": {"message": ...}}`` and kin)."""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode('utf-8', 'replace')
    data = body
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except ValueError:
            text = re.sub(r'<[^>]+>', ' ', body)
            return ' '.join(text.split())[:500]
    if isinstance(data, dict):
        for value in data.values():
            if isinstance(value, dict) and value.get('message'):
                return str(value['message'])
        for key in ('message', 'explanation', 'error', 'detail'):
            if data.get(key):
                return str(data[key])
    return str(body)[:500]


def rest_fields(resource, aliases=()):
    """The REST dict (the service's field names and values) of an openstacksdk resource, or None.

    The managers read the dicts the REST API returns. openstacksdk (4.22) keeps what the service
    sent in the resource's body component under the REST names and before its type conversions
    (Cinder's ``bootable`` stays ``"false"``, ``os-vol-host-attr:host`` keeps its name); fields the
    resource class does not declare are left out by the SDK. ``aliases`` is a list of
    ``(rest name, declared rest name)``: a field the SDK leaves out that carries the same value as
    a declared one (Cinder's ``migration_status`` is ``os-vol-mig-status-attr:migstat``)."""
    if resource is None:
        return None
    body = getattr(resource, '_body', None)
    if body is not None and isinstance(getattr(body, 'attributes', None), dict):
        data = dict(body.attributes)
    elif hasattr(resource, 'to_dict'):
        data = resource.to_dict(body=True, headers=False, computed=False, original_names=True)
    else:
        data = dict(resource)
    for name, declared in aliases:
        if name not in data and declared in data:
            data[name] = data[declared]
    return data


def error_for_status(http_status, message, **details):
    """The typed error for an HTTP status: 404 NotFound, 409 Busy, other 4xx InvalidRequest."""
    if http_status == 404:
        return NotFound(message, **details)
    if http_status == 409:
        return Busy(message, **details)
    if 400 <= http_status < 500:
        return InvalidRequest(message, **details)
    return StorageError(message, **details)


def connection_kwargs(options, service):
    """openstacksdk ``connect()`` keyword arguments from a backend entry's options."""
    attribute = SERVICES[service][0]
    kwargs = {}
    for key in ('cloud', 'auth', 'auth_type', 'region_name', 'interface', 'cacert'):
        if options.get(key) is not None:
            kwargs[key] = options[key]
    if options.get('validate_certs') is not None:
        kwargs['verify'] = bool(options['validate_certs'])
    if options.get('client_cert'):
        kwargs['cert'] = options['client_cert']
    if options.get('client_key'):
        kwargs['key'] = options['client_key']
    if options.get('endpoint_override'):
        kwargs['%s_endpoint_override' % attribute] = options['endpoint_override']
    return kwargs


class OpenStackClient(object):
    """One backend's connection to one OpenStack service, with microversion negotiation.

    ``connect`` (for tests) replaces ``openstack.connect``; it gets the keyword arguments.
    """

    def __init__(self, backend, service, connect=None):
        if service not in SERVICES:
            raise InvalidRequest('Unknown OpenStack service %r: known services are %s'
                                 % (service, ', '.join(sorted(SERVICES))))
        self.backend = backend
        self.service = service
        self.service_name = SERVICES[service][1]
        self.options = dict(getattr(backend, 'openstack', None) or {})
        self._connect = connect
        self._proxy = None
        self._versions = None
        cap = self.options.get('api_version')
        self.cap = parse_version(cap, 'api_version of backend %s' % backend.name) if cap else None

    # -------------------------------------------------------------------------- connection
    def _open(self):
        connect = self._connect
        if connect is None:
            connect = openstack_connect()
        kwargs = connection_kwargs(self.options, self.service)
        try:
            conn = connect(**kwargs)
            return getattr(conn, SERVICES[self.service][0])
        except Exception as exc:  # openstacksdk raises config and auth errors of many kinds
            raise StorageError('Failed to connect to %s for backend %s: %s'
                               % (self.service_name, self.backend.name, _describe(exc)))

    @property
    def proxy(self):
        if self._proxy is None:
            self._proxy = self._open()
        return self._proxy

    # -------------------------------------------------------------------------- microversions
    def versions(self):
        """``(min, max)`` microversions of the service, read once from its version document."""
        if self._versions is None:
            # Raw REST: openstacksdk 4.22's proxies have no call that returns the service's version
            # document (their own negotiation reads it through keystoneauth's endpoint discovery).
            status, body = self._send('GET', '/', None, None, None, 'read the API versions of %s (backend %s)'
                                      % (self.service_name, self.backend.name))
            entries = []
            if isinstance(body, dict):
                if isinstance(body.get('versions'), list):
                    entries = body['versions']
                elif isinstance(body.get('version'), dict):
                    entries = [body['version']]
            found = [e for e in entries if isinstance(e, dict) and e.get('version')]
            current = [e for e in found if e.get('status') == 'CURRENT'] or found
            if not current:
                raise StorageError('Failed to read the API versions of %s for backend %s: the version document '
                                   'names no microversions' % (self.service_name, self.backend.name),
                                   status=status, body=body)
            best = max(current, key=lambda e: parse_version(e['version']))
            self._versions = (parse_version(best.get('min_version') or best['version']), parse_version(best['version']))
        return self._versions

    def max_version(self):
        """The highest microversion the collection uses: the service's, lowered to ``api_version``."""
        high = self.versions()[1]
        return min(high, self.cap) if self.cap else high

    def supports(self, minimum):
        return self.max_version() >= parse_version(minimum)

    def microversion(self, feature, minimum, maximum=None):
        """The microversion to use for ``feature`` (as ``'X.Y'``), or InvalidRequest when too old.

        The highest version both sides speak is taken, lowered to ``maximum`` when the call
        changed shape after it."""
        minimum = parse_version(minimum)
        best = self.max_version()
        if best < minimum:
            capped = (' (capped by api_version %s of the backend)' % format_version(self.cap)
                      if self.cap and self.cap < self.versions()[1] else '')
            raise InvalidRequest('%s of backend %s speaks API microversion %s at most%s; %s needs %s or newer'
                                 % (self.service_name, self.backend.name, format_version(best), capped, feature,
                                    format_version(minimum)),
                                 max_microversion=format_version(best), required_microversion=format_version(minimum))
        if maximum is not None:
            best = min(best, parse_version(maximum))
        return format_version(best)

    # -------------------------------------------------------------------------- openstacksdk proxy calls
    def sdk(self, doing, method, path, call, microversion=None, headers=None, not_found_ok=False):
        """Run ``call(proxy)``, one call of the openstacksdk proxy, at ``microversion``; return its result
        (a generator read to a list while the microversion is set).

        ``method`` and ``path`` name the REST call the proxy sends, for the error message, which reads
        as the one of ``request``. ``headers`` are added to every request of the call (Manila's
        experimental header). With ``not_found_ok`` a 404 returns None instead of raising."""
        proxy = self.proxy
        saved_version = getattr(proxy, 'default_microversion', None)
        saved_headers = getattr(proxy, 'additional_headers', None)
        # The proxy's resources send the adapter's default microversion when one is set
        # (openstack.resource.Resource._get_microversion), instead of negotiating their own.
        proxy.default_microversion = microversion
        if headers:
            proxy.additional_headers = dict(saved_headers or {}, **headers)
        try:
            result = call(proxy)
            if isinstance(result, types.GeneratorType):
                result = list(result)
            return result
        except StorageError:
            raise
        except Exception as exc:  # openstacksdk's HttpException family, keystoneauth's connection errors
            status = getattr(exc, 'status_code', None)
            if not isinstance(status, int):
                if type(exc).__module__.split('.', 1)[0] == 'keystoneauth1':
                    raise StorageError('Failed to %s: %s of backend %s did not answer: %s'
                                       % (doing, self.service_name, self.backend.name, _describe(exc)),
                                       method=method, path=path)
                raise StorageError('Failed to %s: openstacksdk refused the call for %s of backend %s: %s'
                                   % (doing, self.service_name, self.backend.name, _describe(exc)),
                                   method=method, path=path, microversion=microversion)
            if status == 404 and not_found_ok:
                return None
            response = getattr(exc, 'response', None)
            text = getattr(response, 'text', None) or ''
            try:
                data = json.loads(text) if text.strip() else None
            except ValueError:
                data = text
            message = 'Failed to %s: %s (HTTP %s from %s %s%s)' % (
                doing, api_message(text) if text.strip() else _describe(exc), status, method, path,
                ', microversion %s' % microversion if microversion else '')
            raise error_for_status(status, message, status=status, body=data, method=method, path=path,
                                   microversion=microversion)
        finally:
            proxy.default_microversion = saved_version
            if headers:
                proxy.additional_headers = saved_headers

    # -------------------------------------------------------------------------- raw REST requests
    def request(self, method, path, doing, body=None, microversion=None, headers=None, not_found_ok=False):
        """Send one raw REST call (for what the SDK's proxy lacks); return the decoded JSON body (or None).

        ``doing`` completes "Failed to <doing>: ..." in errors. With ``not_found_ok`` a 404 returns
        None instead of raising."""
        status, data = self._send(method, path, body, microversion, headers, doing, not_found_ok)
        if status == 404 and not_found_ok:
            return None
        return data

    def _send(self, method, path, body, microversion, headers, doing, not_found_ok=False):
        kwargs = {'headers': dict(headers or {})}
        if body is not None:
            kwargs['json'] = body
        if microversion:
            kwargs['microversion'] = microversion
        try:
            response = self.proxy.request(path, method, raise_exc=False, **kwargs)
        except StorageError:
            raise
        except Exception as exc:  # keystoneauth: connection refused, timeouts, SSL, discovery
            raise StorageError('Failed to %s: %s of backend %s did not answer: %s'
                               % (doing, self.service_name, self.backend.name, _describe(exc)),
                               method=method, path=path)
        status = response.status_code
        text = response.text or ''
        try:
            data = response.json() if text.strip() else None
        except ValueError:
            data = text
        if status >= 400 and not (status == 404 and not_found_ok):
            message = 'Failed to %s: %s (HTTP %d from %s %s%s)' % (
                doing, api_message(text), status, method, path,
                ', microversion %s' % microversion if microversion else '')
            raise error_for_status(status, message, status=status, body=data, method=method, path=path,
                                   microversion=microversion)
        return status, data


def _describe(exc):
    text = str(exc) or exc.__class__.__name__
    return ' '.join(text.split())
