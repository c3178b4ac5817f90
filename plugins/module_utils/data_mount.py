# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mounting one share export on a data node through a mount template, and unmounting it.

A template uses the reference placeholders ``%(proto)s``, ``%(options)s``, ``%(export)s`` and
``%(path)s``. It is split into argv tokens with :func:`shlex.split` *before* any value is put in,
so a value with spaces or shell syntax stays one argument, and nothing ever goes through a shell.
``%(options)s`` standing alone as a token becomes ``-o <options joined with commas>``, or nothing
when there are no options.

Helpers: ``bind`` (a local folder, ``mount --bind``; read-only takes a second ``remount,bind,ro``),
``nfs``, ``cifs``, ``custom`` (the reference template or the caller's own), ``none``: nothing is
mounted, the export is a folder the data node already reads at its own path, and ``sshfs``: the
export is a folder on another storage host, mounted with sshfs (FUSE over ssh) as ``ssh`` says
(address, port, user, a key file on this data node, the host's keys: checked strictly, never a
password); its argv is built here, never from a template. A dead sshfs (its process killed, its
connection cut) leaves a stale mount ("Transport endpoint is not connected"): mounting again
unmounts it first, unmounting falls back to a lazy unmount.

A mount point this code creates holds a marker file (hidden under the mount while mounted); after
unmounting, a folder that holds nothing but that marker is removed, and so are its parents made the
same way. Folders it did not create are never removed.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import os
import re
import shlex
import shutil
import tempfile

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import remote as remote_lib
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport.mounts import mount_table, same_inode as _same_inode

HELPERS = ('bind', 'none', 'nfs', 'cifs', 'custom', 'sshfs')
# ssh options sshfs does not take (it runs ssh with -x -a -oClearAllForwardings=yes itself; the user is in
# the source, user@address:path).
_SSHFS_DROPPED = ('ForwardAgent=', 'ClearAllForwardings=', 'User=')
PLACEHOLDERS = ('proto', 'options', 'export', 'path')
REFERENCE_MOUNT_TEMPLATE = 'mount -vt %(proto)s %(options)s %(export)s %(path)s'
REFERENCE_UNMOUNT_TEMPLATE = 'umount -v %(path)s'
MOUNT_TEMPLATES = {
    'bind': 'mount --bind %(export)s %(path)s',
    'nfs': 'mount -t nfs %(options)s %(export)s %(path)s',
    'cifs': 'mount -t cifs %(options)s %(export)s %(path)s',
    'custom': REFERENCE_MOUNT_TEMPLATE,
}
DEFAULT_PROTO = {'nfs': 'nfs', 'cifs': 'cifs'}
MARKER = '.storage-mobility-mount-point'

_PLACEHOLDER_RE = re.compile(r'%(?:\((?P<name>[^)]*)\)s|(?P<percent>%))')
_PROTO_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._+-]*$')


def check_value(value, what):
    """Return ``value`` unless it holds a NUL byte or a line break (raise InvalidRequest then)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest('Invalid %s %r: it must be a string' % (what, value))
    problems = []
    if '\x00' in value:
        problems.append('contains a NUL byte')
    if '\n' in value or '\r' in value:
        problems.append('contains a newline')
    if problems:
        raise InvalidRequest('Invalid %s %r: it %s' % (what, value, ' and '.join(problems)))
    return value


def _substitute(token, values, what):
    def replace(match):
        if match.group('percent'):
            return '%'
        name = match.group('name')
        if name not in PLACEHOLDERS:
            raise InvalidRequest('Invalid %s: unknown placeholder %%(%s)s (known: %s)'
                                 % (what, name, ', '.join('%%(%s)s' % p for p in PLACEHOLDERS)))
        value = values.get(name)
        if value is None or (value == '' and name != 'options'):
            raise InvalidRequest('Invalid %s: it uses %%(%s)s but no %s is given' % (what, name, name))
        return value
    return _PLACEHOLDER_RE.sub(replace, token)


def expand_template(template, values, what='mount template'):
    """The argv of ``template`` with ``values`` (proto, options, export, path) put in.

    ``values['options']`` is the comma-joined option string ('' for none). The template is split
    first; each value then lands inside one token, so it can never become two arguments.
    """
    check_value(template, what)
    if template is None or not template.strip():
        raise InvalidRequest('Invalid %s: it is empty' % what)
    try:
        tokens = shlex.split(template)
    except ValueError as exc:
        raise InvalidRequest('Invalid %s %r: %s' % (what, template, exc))
    argv = []
    for token in tokens:
        if token == '%(options)s':
            if values.get('options'):
                argv.extend(['-o', values['options']])
            continue
        expanded = _substitute(token, values, what)
        if expanded == '' and '%(options)s' in token:
            continue  # e.g. a lone "%(options)s," style token with no options: nothing to pass
        argv.append(expanded)
    return argv


def _normalize_source(source):
    return source.rstrip('/') if len(source) > 1 else source


def mount_entry(path):
    """The mount table entry visible at ``path`` (the last one mounted there), or None."""
    real = os.path.realpath(path)
    found = None
    for entry in mount_table():
        if entry['mount_point'] == real:
            found = entry
    return found


def is_read_only(path):
    """Whether the filesystem holding ``path`` is mounted read-only (statvfs ST_RDONLY)."""
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


class DataMount(object):
    """One export of one share on this data node, mounted at ``path`` through a template."""

    def __init__(self, runner, path, helper, export=None, proto=None, options=None, read_only=False,
                 mount_template=None, unmount_template=None, remove_path=True, check_mode=False,
                 euid=None, ssh=None):
        if helper not in HELPERS:
            raise InvalidRequest('Invalid helper %r: expected one of %s' % (helper, ', '.join(HELPERS)))
        self.runner = runner
        self.helper = helper
        self.path = self._check_path(path, 'mount path')
        self.export = check_value(export, 'export')
        self.proto = check_value(proto, 'proto') or DEFAULT_PROTO.get(helper)
        self.options = [check_value(o, 'mount option') for o in options or []]
        self.read_only = bool(read_only)
        self.mount_template = check_value(mount_template, 'mount template') or MOUNT_TEMPLATES.get(helper)
        self.unmount_template = check_value(unmount_template, 'unmount template') or REFERENCE_UNMOUNT_TEMPLATE
        self.remove_path = bool(remove_path)
        self.check_mode = check_mode
        self.euid = os.geteuid() if euid is None else euid
        self.ssh = ssh
        self._validate()

    # ------------------------------------------------------------------ validation

    @staticmethod
    def _check_path(path, what):
        check_value(path, what)
        if not path or not os.path.isabs(path):
            raise InvalidRequest('Invalid %s %r: it must be an absolute path' % (what, path))
        path = os.path.normpath(path)
        if path in ('/', '//'):
            raise InvalidRequest('Invalid %s %r: refusing to mount over /' % (what, path))
        return path

    def _validate(self):
        if self.export is not None:
            if self.export == '':
                raise InvalidRequest('Invalid export: it is empty')
            if self.export.startswith('-'):
                raise InvalidRequest("Invalid export %r: it starts with '-'" % self.export)
        if self.helper == 'sshfs':
            self._validate_sshfs()
        elif self.ssh:
            raise InvalidRequest('Invalid request: ssh is only for helper sshfs, not %s' % self.helper)
        if self.helper in ('bind', 'none', 'nfs', 'cifs', 'sshfs') and self.export is None:
            raise InvalidRequest('Invalid request: helper %s needs an export' % self.helper)
        if self.helper in ('bind', 'none'):
            self.export = self._check_path(self.export, 'export (a local folder for helper %s)' % self.helper)
        if self.proto is not None and not _PROTO_RE.match(self.proto):
            raise InvalidRequest('Invalid proto %r: expected letters, digits, ".", "_", "+" or "-", '
                                 'starting with a letter or digit' % self.proto)
        for option in self.options:
            if option == '':
                raise InvalidRequest('Invalid mount option: it is empty')

    def _validate_sshfs(self):
        if self.mount_template is not None or self.unmount_template != REFERENCE_UNMOUNT_TEMPLATE:
            raise InvalidRequest('Invalid request: helper sshfs builds its own command; it takes no mount or '
                                 'unmount template')
        if self.export is None or not self.export.startswith('/'):
            raise InvalidRequest('Invalid export %r for helper sshfs: the absolute path of the tree on the storage '
                                 'host' % (self.export,))
        spec = dict(self.ssh or {})
        spec.setdefault('path', self.export)
        try:
            self.ssh = remote_lib.check_spec(spec, 'ssh of helper sshfs')
        except ValueError as exc:
            raise InvalidRequest('Invalid %s' % exc)
        for option in self.options:
            if ',' in option:
                raise InvalidRequest('Invalid mount option %r for helper sshfs: it contains a comma' % option)

    def sshfs_source(self):
        """``[user@]address:path``, as the mount table shows it."""
        address = self.ssh['address']
        if ':' in address:
            address = '[%s]' % address
        user = self.ssh.get('user')
        return '%s%s:%s' % (user + '@' if user else '', address, self.export)

    def sshfs_argv(self, known_hosts, contained=False):
        options = (['ro'] if self.read_only else []) + list(self.options)
        if contained:
            # Debian's sshfs refuses to read symlinks whose target is absolute or holds '..' unless told:
            # a copy keeps every symlink as it is (rsync never follows one below the share's root).
            options.append('no_contain_symlinks')
        options += [o for o in remote_lib.ssh_options(self.ssh, known_hosts) if not o.startswith(_SSHFS_DROPPED)]
        # In a session of its own (setsid, waiting for sshfs to have mounted): sshfs and its ssh then
        # outlive the session that ran this module (Ansible's), which ends right after.
        return ['setsid', '--wait', 'sshfs', '-o', ','.join(options), self.sshfs_source(), self.path]

    # ------------------------------------------------------------------ argv

    def _values(self, options):
        return {'proto': self.proto, 'options': ','.join(options), 'export': self.export, 'path': self.path}

    def mount_argv(self):
        if self.helper == 'sshfs':
            return self.sshfs_argv(os.path.join('(a private folder)', 'known_hosts'))
        options = list(self.options)
        if self.read_only and self.helper != 'bind' and 'ro' not in options:
            options.append('ro')
        return expand_template(self.mount_template, self._values(options), 'mount template')

    def unmount_argv(self):
        if self.helper == 'sshfs':
            return ['umount', self.path]
        return expand_template(self.unmount_template, self._values(self.options), 'unmount template')

    def remount_argv(self, read_only):
        flags = 'remount,bind,' if self.helper == 'bind' else 'remount,'
        return ['mount', '-o', flags + ('ro' if read_only else 'rw'), self.path]

    # ------------------------------------------------------------------ state

    def _serves_export(self, entry):
        """Whether the mount ``entry`` at our path is the export (and not something else)."""
        local = (self.helper == 'bind' or (self.helper == 'custom' and self.export is not None
                 and self.export.startswith('/') and not self.export.startswith('//')
                 and os.path.isdir(self.export)))
        if local:
            return _same_inode(self.path, self.export)
        if self.export is None:
            return True  # a custom template that names its own source: we cannot tell, trust it
        if self.helper == 'sshfs':
            return entry['fstype'] == 'fuse.sshfs' and _normalize_source(entry['source']) == _normalize_source(
                self.sshfs_source())
        return _normalize_source(entry['source']) == _normalize_source(self.export)

    def _describe(self, entry):
        return '%s (%s)' % (entry['source'] if entry['root'] in ('/', '') else
                            '%s:%s' % (entry['source'], entry['root']), entry['fstype'])

    def _require_root(self, verb):
        if self.euid != 0:
            raise StorageError('Cannot %s %s at %s with helper %s: mounting needs root; run as root '
                               '(become: true) or use helper none for a folder this data node '
                               'already reads' % (verb, self.export or 'the export', self.path, self.helper))

    def _result(self, changed, mounted, read_only, cmd=None, actions=None, warnings=None, mount_path=None):
        return {'changed': changed, 'mount_path': mount_path or self.path, 'mounted': mounted,
                'read_only': read_only, 'cmd': cmd or [], 'actions': actions or [], 'warnings': warnings or []}

    # ------------------------------------------------------------------ mount point folders

    def _make_mount_point(self):
        """Create the mount point and any missing parent, each with the marker; return what was made."""
        missing = []
        folder = self.path
        while not os.path.lexists(folder):
            missing.append(folder)
            folder = os.path.dirname(folder)
        if not os.path.isdir(folder):
            raise StorageError('Failed to create mount point %s: %s is not a folder' % (self.path, folder))
        made = []
        for folder in reversed(missing):
            try:
                os.mkdir(folder, 0o755)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise StorageError('Failed to create mount point %s: %s: %s'
                                       % (self.path, folder, exc.strerror))
                continue
            made.append(folder)
            with open(os.path.join(folder, MARKER), 'w') as handle:
                handle.write('created by storage.mobility.data_mount; removed with this folder\n')
        return made

    @staticmethod
    def _made_by_us_and_empty(folder):
        try:
            return os.listdir(folder) == [MARKER] and mount_entry(folder) is None
        except OSError:
            return False

    def _remove_mount_points(self):
        """Remove the mount point and its parents while each was made here and holds nothing else."""
        removed = []
        folder = self.path
        while folder not in ('/', '') and self._made_by_us_and_empty(folder):
            try:
                os.unlink(os.path.join(folder, MARKER))
                os.rmdir(folder)
            except OSError:
                break
            removed.append(folder)
            folder = os.path.dirname(folder)
        return removed

    # ------------------------------------------------------------------ actions

    def mounted(self):
        """Mount the export at the path (read-only when asked); return the result dict."""
        if self.helper == 'none':
            return self._none()
        entry = mount_entry(self.path)
        stale = []
        if entry is not None and self.helper == 'sshfs' and self._serves_export(entry) and self._stale():
            # A dead sshfs: unmount it, then mount again below.
            stale = ['unmount the stale sshfs mount at %s (its connection is gone)' % self.path]
            if self.check_mode:
                again = 'mount %s at %s again' % (self.export, self.path)
                return self._result(True, True, self.read_only, self.mount_argv(), stale + [again])
            self._require_root('unmount')
            self._unmount_fuse()
            entry = mount_entry(self.path)
        if entry is not None:
            if not self._serves_export(entry):
                raise StorageError('Cannot mount %s at %s: %s is mounted there'
                                   % (self.export or 'the export', self.path, self._describe(entry)))
            current = is_read_only(self.path)
            if current == self.read_only:
                return self._result(False, True, current)
            argv = self.remount_argv(self.read_only)
            actions = ['remount %s %s' % (self.path, 'read-only' if self.read_only else 'read-write')]
            if self.check_mode:
                return self._result(True, True, self.read_only, argv, actions)
            self._require_root('remount')
            self.runner.run(argv, 'remount %s %s' % (self.path, 'read-only' if self.read_only else 'read-write'))
            return self._result(True, True, self._verify_mode(argv), argv, actions)

        if os.path.lexists(self.path) and not os.path.isdir(self.path):
            raise StorageError('Cannot mount %s at %s: the path exists and is not a folder'
                               % (self.export or 'the export', self.path))
        argv = self.mount_argv()
        actions = list(stale)
        if not os.path.isdir(self.path):
            actions.append('create mount point %s' % self.path)
        suffix = ' read-only' if self.read_only and self.helper != 'bind' else ''
        actions.append('mount %s at %s%s' % (self.export or 'the export', self.path, suffix))
        if self.read_only and self.helper == 'bind':
            actions.append('remount %s read-only' % self.path)
        if self.check_mode:
            return self._result(True, True, self.read_only, argv, actions)
        self._require_root('mount')
        made = self._make_mount_point()
        what = 'mount %s at %s' % (self.export or 'the export', self.path)
        if self.helper == 'sshfs':
            what = 'mount %s of storage host %s at %s with sshfs' % (self.export, self.ssh['host'], self.path)
        folder = None
        try:
            if self.helper == 'sshfs':
                # The host's keys for ssh to check (strictly); sshfs has connected when it returns.
                folder = tempfile.mkdtemp(prefix='mobility-sshfs-')
                known_hosts = os.path.join(folder, 'known_hosts')
                with open(known_hosts, 'w') as handle:
                    handle.write(remote_lib.known_hosts_text(self.ssh))
                help_text = self.runner.run(['sshfs', '-h'], 'ask sshfs for its options', check=False)
                argv = self.sshfs_argv(known_hosts, 'no_contain_symlinks' in ''.join(help_text[1:]))
            self.runner.run(argv, what)
        except StorageError:
            if made:
                self._remove_mount_points()
            raise
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        entry = mount_entry(self.path)
        if entry is None or not self._serves_export(entry):
            seen = 'nothing is mounted there' if entry is None else '%s is mounted there' % self._describe(entry)
            raise StorageError('Failed to %s: %s exited 0 but %s' % (what, argv[0], seen), cmd=argv)
        if self.read_only and self.helper == 'bind':
            remount = self.remount_argv(True)
            try:
                self.runner.run(remount, 'remount %s read-only' % self.path)
            except StorageError:
                self._undo()
                raise
        return self._result(True, True, self._verify_mode(argv), argv, actions)

    def _verify_mode(self, argv):
        """The measured read-only flag; a mount asked read-only that is writable is undone and fails."""
        current = is_read_only(self.path)
        if self.read_only and not current:
            self._undo()
            raise StorageError('Failed to mount %s read-only at %s: it is writable after mounting, so it '
                               'was unmounted again' % (self.export or 'the export', self.path), cmd=argv)
        return current

    def _stale(self):
        """True when the FUSE mount at the path no longer answers (its process is gone)."""
        try:
            os.statvfs(self.path)
        except OSError as exc:
            return exc.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO)
        return False

    def _unmount_fuse(self):
        """Unmount the sshfs mount at the path: ``umount``, else ``umount -l`` (stale or busy)."""
        rc = self.runner.run(['umount', self.path], 'unmount %s' % self.path, check=False)
        if mount_entry(self.path) is not None:
            self.runner.run(['umount', '-l', self.path], 'unmount %s lazily' % self.path)
        return rc

    def _undo(self):
        if self.helper == 'sshfs':
            try:
                self._unmount_fuse()
            finally:
                self._remove_mount_points()
            return
        try:
            self.runner.run(self.unmount_argv(), 'unmount %s' % self.path, check=False)
        finally:
            self._remove_mount_points()

    def unmounted(self):
        """Unmount the path (and remove the mount point folder made here); return the result dict."""
        if self.helper == 'none':
            return self._none(mounting=False)
        entry = mount_entry(self.path)
        actions = []
        argv = []
        if entry is not None:
            if self.export is not None and not self._serves_export(entry):
                raise StorageError('Refusing to unmount %s: %s is mounted there, not %s'
                                   % (self.path, self._describe(entry), self.export))
            argv = self.unmount_argv()
            actions.append('unmount %s' % self.path)
        if self.remove_path:
            if entry is not None:
                if self.check_mode:
                    actions.append('remove mount point %s if this module made it and it is empty' % self.path)
            elif self._made_by_us_and_empty(self.path):
                actions.append('remove mount point %s' % self.path)
        if not actions:
            return self._result(False, False, None)
        if self.check_mode:
            return self._result(True, False, None, argv, actions)
        if argv and self.helper == 'sshfs':
            self._require_root('unmount')
            self._unmount_fuse()
        elif argv:
            self._require_root('unmount')
            self.runner.run(argv, 'unmount %s' % self.path)
            if mount_entry(self.path) is not None:
                raise StorageError('Failed to unmount %s: %s exited 0 but %s is still mounted there'
                                   % (self.path, argv[0], self._describe(mount_entry(self.path))), cmd=argv)
        if self.remove_path:
            removed = self._remove_mount_points()
            actions = [a for a in actions if not a.startswith('remove mount point')]
            actions.extend('remove mount point %s' % folder for folder in removed)
        return self._result(True, False, None, argv, actions)

    def _none(self, mounting=True):
        """Helper none: nothing is mounted; the tree is read at the export path itself."""
        warnings = []
        if not os.path.isdir(self.export):
            if not mounting:
                return self._result(False, False, None, mount_path=self.export)
            raise StorageError('Cannot use %s with helper none: it is not a folder on this data node' % self.export)
        current = is_read_only(self.export)
        if mounting and self.read_only and not current:
            warnings.append('Helper none mounts nothing, so read_only cannot be enforced: %s is writable'
                            % self.export)
        return self._result(False, False, current, warnings=warnings, mount_path=self.export)
