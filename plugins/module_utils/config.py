# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backends declared by the operator (``backends`` option) and their pools."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import os
import re

from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound
from ansible_collections.storage.mobility.plugins.module_utils.names import PoolAddress
from ansible_collections.storage.mobility.plugins.module_utils.transport.registry import transport_names

_PART_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]*$')
EXPORT_HELPERS = ('bind', 'none')
#: a backend's ``transport``: the file transports of transport/registry.py, and ``rest`` (OpenStack backends)
REST_TRANSPORT = 'rest'
TRANSPORTS = tuple(transport_names()) + (REST_TRANSPORT,)
DEFAULT_IGNORE_FILES = ['lost+found']
#: drivers whose storage is an OpenStack service reached over its REST API: the service keeps the
#: state and names the pools (``host@backend#pool`` as the service reports them)
OPENSTACK_DRIVERS = ('manila', 'cinder')
OPENSTACK_OPTIONS = ('cloud', 'auth', 'auth_type', 'region_name', 'interface', 'cacert', 'validate_certs',
                     'client_cert', 'client_key', 'endpoint_override', 'api_version')
OPENSTACK_INTERFACES = ('public', 'internal', 'admin')
_MICROVERSION_RE = re.compile(r'^\d+\.\d+$')
#: a backend's ``ssh`` options (``transport: ssh``); transport/ssh.py SshOptions takes them
SSH_TRANSPORT = 'ssh'
SSH_OPTIONS = ('address', 'user', 'port', 'private_key_file', 'known_hosts_file', 'host_key_checking', 'become',
               'direct_address', 'direct_key_file', 'data_node_key_file')
#: a backend's ``data_path``: how a stream from its host to another storage host travels (docs/hosts.md)
DATA_PATHS = ('direct', 'controller')
DEFAULT_DATA_PATH = 'direct'
SSH_HOST_KEY_CHECKING = ('strict', 'accept-new')
_SSH_ADDRESS_RE = re.compile(r'^[A-Za-z0-9_.:\[\]-]+$')
_SSH_USER_RE = re.compile(r'^[A-Za-z0-9_][A-Za-z0-9_.-]*$')


def _part(value, what):
    if not isinstance(value, str) or not _PART_RE.fullmatch(value):
        raise InvalidRequest("Invalid %s %r in backends: use letters, digits, '.', '_' or '-', "
                             'starting with a letter or digit' % (what, value))
    return value


def _abs_path(value, what):
    if not isinstance(value, str) or not value.startswith('/') or '\x00' in value or '\n' in value:
        raise InvalidRequest('Invalid %s %r in backends: it must be an absolute path' % (what, value))
    if any(part == '..' for part in value.split('/')):
        raise InvalidRequest("Invalid %s %r in backends: it must not contain '..'" % (what, value))
    return os.path.normpath(value)


class Pool(object):
    """One pool of one backend: an address, a path and the backend it belongs to."""

    def __init__(self, backend, name, path):
        self.backend = backend
        self.name = name
        self.path = path
        self.ref = PoolAddress(backend.host, backend.name, name)

    def __str__(self):
        return str(self.ref)

    def __repr__(self):
        return 'Pool(%s, %r)' % (self.ref, self.path)


class Backend(object):
    """What every declared backend has: a name, a driver, a host and a transport.

    ``Backend.declared(spec)`` makes the right kind: LocalBackend for the collection's own drivers
    (pools, export, migration options), OpenStackBackend for the drivers whose service keeps the
    state (connection options). Each kind validates only what it takes."""

    #: True for backends whose storage is an OpenStack service reached over its REST API
    is_openstack = False
    #: the transport a backend of this kind uses when ``transport`` is left out
    default_transport = 'local'

    def __init__(self, spec):
        self.spec = spec
        self.name = _part(spec.get('name'), 'backend name')
        self.driver = spec.get('driver') or 'posix'
        self.host = _part(spec.get('host') or 'localhost', 'host of backend %s' % self.name)
        self.transport = spec.get('transport') or self.default_transport
        if self.transport not in TRANSPORTS:
            raise InvalidRequest('Invalid transport %r for backend %s: supported transports are %s'
                                 % (self.transport, self.name, ', '.join(TRANSPORTS)))
        self.openstack = {}
        self.ssh = None
        self.data_path = DEFAULT_DATA_PATH
        self.pools = {}
        self.export_helper = 'none'
        self.export_root = None
        self.migration_ignore_files = list(DEFAULT_IGNORE_FILES)
        self.replication_domain = spec.get('replication_domain')
        self.validate(spec)

    @staticmethod
    def declared(spec):
        """The backend an entry of ``backends`` declares, validated by its kind."""
        if not isinstance(spec, dict):
            raise InvalidRequest('Invalid backend %r: each entry of backends must be a dictionary' % (spec,))
        kind = OpenStackBackend if (spec.get('driver') or 'posix') in OPENSTACK_DRIVERS else LocalBackend
        return kind(spec)

    def validate(self, spec):
        """Check and keep the options this kind of backend takes; refuse the others."""
        raise NotImplementedError


class LocalBackend(Backend):
    """A backend of the collection's own drivers: its pools (name -> path), export and migration options."""

    def validate(self, spec):
        if self.transport == REST_TRANSPORT:
            raise InvalidRequest('Invalid transport rest for backend %s: only the OpenStack drivers (%s) use it; '
                                 'driver %s reaches its storage with transport local or ssh'
                                 % (self.name, ', '.join(OPENSTACK_DRIVERS), self.driver))
        unexpected = sorted(k for k in OPENSTACK_OPTIONS if spec.get(k) is not None)
        if unexpected:
            raise InvalidRequest('Backend %s uses driver %s, which takes no OpenStack options (%s): they belong '
                                 'to backends with driver %s' % (self.name, self.driver, ', '.join(unexpected),
                                                                 ' or '.join(OPENSTACK_DRIVERS)))
        self._ssh(spec.get('ssh'))
        self.data_path = spec.get('data_path') or DEFAULT_DATA_PATH
        if self.data_path not in DATA_PATHS:
            raise InvalidRequest('Invalid data_path %r for backend %s: choose one of %s'
                                 % (self.data_path, self.name, ', '.join(DATA_PATHS)))
        self._export(spec.get('export') or {})
        ignore = spec.get('migration_ignore_files')
        self.migration_ignore_files = list(DEFAULT_IGNORE_FILES if ignore is None else ignore)
        self._pools(spec.get('pools'))

    def _ssh(self, ssh):
        """The ssh options of a backend with ``transport: ssh``; refused on other transports."""
        ssh = dict((k, v) for k, v in (ssh or {}).items() if v is not None) if isinstance(ssh, dict) else ssh
        if self.transport != SSH_TRANSPORT:
            if ssh:
                raise InvalidRequest('Backend %s sets ssh options but uses transport %s: set transport: ssh, '
                                     'or remove ssh' % (self.name, self.transport))
            return
        if not isinstance(ssh, dict):
            raise InvalidRequest('Invalid ssh for backend %s: expected a dictionary (%s)' % (self.name, ', '.join(SSH_OPTIONS)))
        if ssh.get('inventory_host'):
            raise InvalidRequest('The ssh inventory_host %s of backend %s was not resolved: the options are read from '
                                 'the inventory on the controller by the action plugin of the module, which runs when '
                                 'the module runs as an Ansible task; run it as a task, or give the ssh options '
                                 'themselves' % (ssh['inventory_host'], self.name))
        unknown = sorted(k for k in ssh if k not in SSH_OPTIONS)
        if unknown:
            raise InvalidRequest('Unknown ssh option(s) %s for backend %s: known options are %s'
                                 % (', '.join(unknown), self.name, ', '.join(SSH_OPTIONS)))
        address = ssh.get('address') or self.host
        direct_address = ssh.get('direct_address')
        if direct_address is not None and (not isinstance(direct_address, str) or direct_address.startswith('-')
                                           or not _SSH_ADDRESS_RE.fullmatch(direct_address)):
            raise InvalidRequest('Invalid ssh direct_address %r for backend %s: a host name or an IP address'
                                 % (direct_address, self.name))
        if not isinstance(address, str) or not _SSH_ADDRESS_RE.match(address) or address.startswith('-'):
            raise InvalidRequest('Invalid ssh address %r for backend %s: a host name or an IP address' % (address, self.name))
        user = ssh.get('user')
        if user is not None and (not isinstance(user, str) or not _SSH_USER_RE.match(user)):
            raise InvalidRequest('Invalid ssh user %r for backend %s: a login name' % (user, self.name))
        port = ssh.get('port')
        if port is not None:
            try:
                port = int(port)
            except (TypeError, ValueError):
                port = 0
            if not 0 < port < 65536:
                raise InvalidRequest('Invalid ssh port %r for backend %s: a TCP port (1-65535)' % (ssh.get('port'), self.name))
        for option in ('private_key_file', 'known_hosts_file', 'direct_key_file', 'data_node_key_file'):
            if ssh.get(option) is not None:
                _abs_path(ssh[option], 'ssh %s of backend %s' % (option, self.name))
        if '%' in (ssh.get('direct_key_file') or '') or any(c.isspace() for c in ssh.get('direct_key_file') or ''):
            # ssh expands %-tokens in identity file names: a literal path must not contain them.
            raise InvalidRequest("Invalid ssh direct_key_file %r for backend %s: it must not contain '%%' or spaces"
                                 % (ssh['direct_key_file'], self.name))
        data_node_key = ssh.get('data_node_key_file') or ''
        if '%' in data_node_key or ',' in data_node_key or any(c.isspace() for c in data_node_key):
            # ssh expands %-tokens; sshfs splits its -o value at commas.
            raise InvalidRequest("Invalid ssh data_node_key_file %r for backend %s: it must not contain '%%', ',' "
                                 "or spaces" % (ssh['data_node_key_file'], self.name))
        checking = ssh.get('host_key_checking') or 'strict'
        if checking not in SSH_HOST_KEY_CHECKING:
            raise InvalidRequest('Invalid ssh host_key_checking %r for backend %s: choose one of %s'
                                 % (checking, self.name, ', '.join(SSH_HOST_KEY_CHECKING)))
        become = ssh.get('become', False)
        if not isinstance(become, bool):
            raise InvalidRequest('Invalid ssh become %r for backend %s: true or false' % (become, self.name))
        self.ssh = {'address': address, 'user': user, 'port': port, 'private_key_file': ssh.get('private_key_file'),
                    'known_hosts_file': ssh.get('known_hosts_file'), 'host_key_checking': checking, 'become': become,
                    'direct_address': direct_address, 'direct_key_file': ssh.get('direct_key_file'),
                    'data_node_key_file': ssh.get('data_node_key_file')}

    def _export(self, export):
        if not isinstance(export, dict):
            raise InvalidRequest('Invalid export for backend %s: expected a dictionary with helper and root' % self.name)
        self.export_helper = export.get('helper') or 'none'
        if self.export_helper not in EXPORT_HELPERS:
            raise InvalidRequest('Invalid export helper %r for backend %s: choose one of %s'
                                 % (self.export_helper, self.name, ', '.join(EXPORT_HELPERS)))
        if self.export_helper == 'bind':
            if not export.get('root'):
                raise InvalidRequest('Backend %s uses the bind export helper but sets no export root' % self.name)
            self.export_root = _abs_path(export['root'], 'export root of backend %s' % self.name)

    def _pools(self, pools):
        if not isinstance(pools, dict) or not pools:
            raise InvalidRequest('Backend %s declares no pools: pools must map pool names to {path: ...}' % self.name)
        for pool_name in sorted(pools):
            pool_spec = pools[pool_name]
            if isinstance(pool_spec, str):
                pool_spec = {'path': pool_spec}
            if not isinstance(pool_spec, dict) or not pool_spec.get('path'):
                raise InvalidRequest('Pool %s of backend %s has no path' % (pool_name, self.name))
            _part(pool_name, 'pool name of backend %s' % self.name)
            path = _abs_path(pool_spec['path'], 'path of pool %s#%s' % (self.name, pool_name))
            self.pools[pool_name] = Pool(self, pool_name, path)


class OpenStackBackend(Backend):
    """A backend whose storage is an OpenStack service: no local pools, the connection options, a microversion cap."""

    is_openstack = True
    default_transport = REST_TRANSPORT

    def validate(self, spec):
        if self.transport != REST_TRANSPORT:
            raise InvalidRequest('Invalid transport %r for backend %s: driver %s is reached over its REST API, '
                                 'use transport rest (or leave transport out)' % (self.transport, self.name, self.driver))
        if spec.get('ssh'):
            raise InvalidRequest('Backend %s uses driver %s, which is reached over its REST API: remove ssh from it'
                                 % (self.name, self.driver))
        if spec.get('pools'):
            raise InvalidRequest('Backend %s uses driver %s, whose pools are the ones the service reports '
                                 '(host@backend#pool, for example devhost@alpha#pool1): remove pools from it'
                                 % (self.name, self.driver))
        if spec.get('export') and spec['export'].get('helper') == 'bind':
            raise InvalidRequest('Backend %s uses driver %s, which exports its shares itself: remove export from it'
                                 % (self.name, self.driver))
        options = dict((k, spec.get(k)) for k in OPENSTACK_OPTIONS if spec.get(k) is not None)
        if options.get('auth') is not None and not isinstance(options['auth'], dict):
            raise InvalidRequest('Invalid auth for backend %s: expected a dictionary (auth_url, username, ...)' % self.name)
        if options.get('interface') is not None and options['interface'] not in OPENSTACK_INTERFACES:
            raise InvalidRequest('Invalid interface %r for backend %s: choose one of %s'
                                 % (options['interface'], self.name, ', '.join(OPENSTACK_INTERFACES)))
        version = options.get('api_version')
        if version is not None and not _MICROVERSION_RE.match(str(version)):
            raise InvalidRequest('Invalid api_version %r for backend %s: expected MAJOR.MINOR, for example 2.65'
                                 % (version, self.name))
        self.openstack = options


class Backends(object):
    """All declared backends, with lookup of a pool by its ``host@backend#pool`` address."""

    def __init__(self, specs):
        if not specs:
            raise InvalidRequest('No backends declared: pass backends (usually through module_defaults '
                                 'for group/storage.mobility.mobility) with at least one backend and its pools')
        if not isinstance(specs, list):
            raise InvalidRequest('Invalid backends: expected a list of backend dictionaries')
        self.backends = []
        seen = set()
        for spec in specs:
            backend = Backend.declared(spec)
            key = (backend.host, backend.name)
            if key in seen:
                raise InvalidRequest('Backend %s@%s is declared twice' % key)
            seen.add(key)
            self.backends.append(backend)
        reached = {}
        for backend in self.local():
            if backend.transport == SSH_TRANSPORT:
                other = reached.setdefault(backend.host, backend)
                if other.ssh != backend.ssh:
                    raise InvalidRequest('Backends %s and %s are both on host %s but declare different ssh options: '
                                         'one host is reached one way in a run' % (other.name, backend.name, backend.host))
        paths = {}
        for pool in self.pools():
            # Pools on different ssh hosts may have the same path; local ones are all on this machine.
            where = (pool.backend.host if pool.backend.transport == SSH_TRANSPORT else None, pool.path)
            if where in paths:
                raise InvalidRequest('Pools %s and %s have the same path %s' % (paths[where], pool, pool.path))
            paths[where] = pool

    def openstack(self, driver):
        """The declared backends with OpenStack driver ``driver`` (``manila`` or ``cinder``)."""
        return [b for b in self.backends if b.driver == driver]

    def local(self):
        """The backends whose pools the collection manages itself."""
        return [b for b in self.backends if not b.is_openstack]

    def pools(self):
        """Every pool of every backend, in a stable order."""
        result = []
        for backend in self.backends:
            result.extend(backend.pools[name] for name in sorted(backend.pools))
        return result

    def resolve(self, address, what='pool'):
        """Return the Pool for ``host@backend#pool``; say exactly which part is unknown."""
        ref = address if isinstance(address, PoolAddress) else PoolAddress.parse(address, what)
        hosts = sorted(set(b.host for b in self.local()))
        if ref.host not in hosts:
            raise NotFound('Unknown host %r in %s %s: declared hosts are %s'
                           % (ref.host, what, ref, ', '.join(hosts)))
        on_host = [b for b in self.local() if b.host == ref.host]
        match = [b for b in on_host if b.name == ref.backend]
        if not match:
            raise NotFound('Unknown backend %r on host %s in %s %s: declared backends there are %s'
                           % (ref.backend, ref.host, what, ref, ', '.join(sorted(b.name for b in on_host))))
        backend = match[0]
        if ref.pool not in backend.pools:
            raise NotFound('Unknown pool %r of backend %s@%s in %s %s: declared pools are %s'
                           % (ref.pool, ref.host, ref.backend, what, ref, ', '.join(sorted(backend.pools))))
        return backend.pools[ref.pool]
