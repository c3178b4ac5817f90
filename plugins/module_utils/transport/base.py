# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The transport: how the collection reaches the host that holds a backend's storage.

Drivers, the record store, the share locks and the export helpers never call ``os``,
``subprocess`` or ``fcntl`` on storage paths themselves: they ask the transport of their backend.
Everything here is expressed in argv lists, paths and plain values (ints, strings, dicts, the
FileStat tuple below), so that a transport to another machine (ssh: each argv quoted with
``shlex.join``, the file operations done by small commands or a helper) is one new file and no
driver changes. Failures of file operations raise OSError with the errno of the failed call (a
remote transport maps the remote errno), exactly as the local calls do; commands that fail raise
CommandError naming what failed.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import abc
import collections

from ansible_collections.storage.mobility.plugins.module_utils.transport.mounts import deepest_mount, stack_at

#: The name prefix of the temporary file of an atomic write (a transport's write_json and the
#: like): one that a writer killed while writing left behind is the writer's own, and a folder of
#: the collection that holds one may be removed with it.
ATOMIC_TMP_PREFIX = '.tmp.'

#: What stat/lstat return: plain values, no os.stat_result (which exists only locally).
FileStat = collections.namedtuple('FileStat', ['mode', 'ino', 'dev', 'nlink', 'uid', 'gid', 'size',
                                               'atime_ns', 'mtime_ns', 'ctime_ns'])


class LockBusy(Exception):
    """Another holder has the lock; ``holder`` is the text it wrote into the lock file, or None."""

    def __init__(self, holder):
        super(LockBusy, self).__init__(holder or 'holder unknown')
        self.holder = holder


class LockReplaced(Exception):
    """The lock file kept being replaced while it was being locked."""


class TailEdit(object):
    """An edit of the end of a piped stream: when the stream ends with the bytes ``closing``,
    the bytes ``insert`` go in just before them; any other stream passes unchanged."""

    def __init__(self, closing, insert):
        self.closing = closing
        self.insert = insert

    def finish(self, held):
        """What to pass on for the last ``len(closing)`` bytes ``held`` of the stream."""
        return self.insert + held if held == self.closing else held


class Transport(abc.ABC):
    """One storage host. Paths are paths on that host."""

    #: the value of a backend's ``transport`` option this class serves
    name = None

    def __init__(self, runner):
        self.runner = runner

    # -- commands ----------------------------------------------------------------------------
    @abc.abstractmethod
    def run(self, argv, what, check=True):
        """Run the argv list on the host; (rc, stdout, stderr). With ``check`` a non-zero exit
        raises CommandError naming ``what`` with cmd/rc/stderr."""

    @abc.abstractmethod
    def pipe(self, producer, consumer, what, on_chunk=None, capture=False, edit=None, die_midway=False):
        """Run ``producer | consumer`` (two argv lists) with the stream passing through the
        caller, so it is measured (``on_chunk(bytes so far)``) and can be edited at its end
        (``edit``: a TailEdit). Return (bytes passed, consumer stdout when ``capture``, else '').
        A failure raises StorageError naming the program that failed (its first two argv words).
        ``die_midway`` (fault injection for the crash tests): the process exits (70) after passing
        on half of the stream, as a run killed in the middle of a transfer."""

    @abc.abstractmethod
    def which(self, program):
        """True when ``program`` is on the host's PATH."""

    @abc.abstractmethod
    def is_root(self):
        """True when commands run as root on the host."""

    @abc.abstractmethod
    def pids_running(self, program, verbs, paths):
        """Pids of processes ``program VERB ...`` (``verbs``: the allowed second words) that name
        one of ``paths`` exactly among their arguments; this process is left out."""

    @abc.abstractmethod
    def kill(self, pid):
        """SIGKILL ``pid``; a process already gone is not an error."""

    # -- file operations ---------------------------------------------------------------------
    @abc.abstractmethod
    def stat(self, path):
        """FileStat of ``path`` (symlinks followed); OSError when it cannot be read."""

    @abc.abstractmethod
    def lstat(self, path):
        """FileStat of ``path`` itself; OSError when it cannot be read."""

    @abc.abstractmethod
    def exists(self, path):
        """True when ``path`` exists (symlinks followed)."""

    @abc.abstractmethod
    def lexists(self, path):
        """True when ``path`` exists, a dangling symlink included."""

    @abc.abstractmethod
    def is_dir(self, path):
        """True for a folder (symlinks followed)."""

    @abc.abstractmethod
    def is_file(self, path):
        """True for a regular file (symlinks followed)."""

    @abc.abstractmethod
    def is_link(self, path):
        """True for a symlink."""

    @abc.abstractmethod
    def realpath(self, path):
        """``path`` with every symlink resolved."""

    @abc.abstractmethod
    def listdir(self, path):
        """The names in folder ``path``; OSError when it cannot be read."""

    @abc.abstractmethod
    def makedirs(self, path, mode=0o755):
        """Create ``path`` and its missing parents; OSError (EEXIST included) as os.makedirs."""

    @abc.abstractmethod
    def mkdir(self, path, mode=0o755):
        """Create the folder ``path``; OSError (EEXIST included) as os.mkdir."""

    @abc.abstractmethod
    def rename(self, source, target):
        """rename(2): atomic within one filesystem."""

    @abc.abstractmethod
    def unlink(self, path):
        """Remove a file."""

    @abc.abstractmethod
    def rmdir(self, path):
        """Remove an empty folder."""

    @abc.abstractmethod
    def fsync_dir(self, path):
        """Make the entries of folder ``path`` durable."""

    @abc.abstractmethod
    def read_bytes(self, path):
        """The whole content of a small file; OSError when it cannot be read."""

    @abc.abstractmethod
    def write_json_atomic(self, path, data):
        """Write ``data`` as JSON to ``path``: temporary file, fsync, rename, fsync of the folder.
        Readers see the old file or the new one, never a part."""

    @abc.abstractmethod
    def write_text_atomic(self, path, text, mode=0o644):
        """Write the string ``text`` (UTF-8) to ``path`` as write_json_atomic does, with ``mode``
        (a metrics textfile that a node exporter running as another user must read)."""

    @abc.abstractmethod
    def append_line(self, path, line, rotate_bytes=None):
        """Append ``line`` (a string without a newline) and a newline to ``path`` in one write,
        created with mode 0600, and make it durable; lines of concurrent writers never interleave.
        With ``rotate_bytes``, a file that has reached that size is first renamed to
        ``path + '.1'`` (replacing an older one)."""

    @abc.abstractmethod
    def statvfs(self, path):
        """The filesystem of ``path``: a dict with ``f_blocks``, ``f_bavail``, ``f_frsize``."""

    @abc.abstractmethod
    def tree_bytes(self, path):
        """The apparent size of the files below ``path`` (unreadable entries count 0)."""

    @abc.abstractmethod
    def tree_counts(self, path, since=None):
        """``{'bytes': ..., 'files': ...}`` below ``path``: the apparent size as tree_bytes counts
        it and the number of entries that are not folders (what a copy's per-file cost applies to).

        With ``since`` (seconds since the epoch) also ``changed_bytes`` and ``changed_files``: the
        entries whose content or inode changed at or after ``since`` (mtime or ctime), and folders
        that changed (an entry added, removed or renamed in them) count as changed files."""

    # -- file attributes (immutable / append-only, see data_copy/fileflags.py) -----------------
    @abc.abstractmethod
    def read_flags(self, path):
        """The immutable/append-only flags of ``path`` (0 when none)."""

    @abc.abstractmethod
    def set_flags(self, path, flags):
        """Set the immutable/append-only flags of ``path`` to ``flags``."""

    @abc.abstractmethod
    def flagged_entries(self, path, one_file_system=True):
        """{relative name: flags} of the entries below ``path`` that carry those flags."""

    @abc.abstractmethod
    def clear_flags_tree(self, path):
        """Clear those flags below ``path``; a true value when any was cleared."""

    @abc.abstractmethod
    def set_flags_tree(self, path, flags):
        """Add ``flags`` to ``path`` and to every regular file and folder below it (fileflags.set_tree);
        returns how many entries changed."""

    # -- the share locks ---------------------------------------------------------------------
    @abc.abstractmethod
    def lock(self, path, create=True):
        """Take the exclusive lock of the lock file ``path`` without waiting; return a handle
        with ``write_holder(text)`` (what others read when they find it held) and
        ``release(remove=False)``. Without ``create`` no file is created, and None is returned
        when there is no lock file. A lock file removed by its holder while this run opened it is locked
        again at its current path. Raises LockBusy (with the holder's text) when it is held,
        LockReplaced when the file keeps being replaced. ``release(remove=True)`` removes the
        file (only while it is still the locked one) before unlocking."""

    # -- host-side inspections ---------------------------------------------------------------
    @abc.abstractmethod
    def open_writers(self, paths, whole_device=False):
        """Processes that could still write into ``paths`` (transport/openfiles.py)."""

    @abc.abstractmethod
    def users(self, paths):
        """Processes using ``paths`` in any way (what keeps a mount busy)."""

    @abc.abstractmethod
    def mount_table(self):
        """The host's mounts (transport/mounts.py: mount_table)."""

    @abc.abstractmethod
    def same_inode(self, a, b):
        """True when both paths are the same folder (a bind mount)."""

    def opens_direct(self, path):
        """True when the file ``path`` opens with O_DIRECT (its filesystem has direct I/O); here with
        ``dd iflag=direct count=0``, which opens it that way and reads nothing."""
        rc = self.run(['dd', 'if=' + path, 'of=/dev/null', 'iflag=direct', 'count=0', 'status=none'],
                      'open %s with direct I/O' % path, check=False)[0]
        return rc == 0

    @abc.abstractmethod
    def mount_base_beneath(self, path, source, options):
        """Slide an empty read-only tmpfs named ``source`` (``options``: (key, value) pairs)
        beneath the mount on top of ``path`` without uncovering it; raise BaseUnsupported
        (transport/mounts.py) when the host's kernel cannot, OSError when the mount fails."""

    @abc.abstractmethod
    def tree_seal(self, path, ignore):
        """The seal (data_copy/seal.py) of the tree at ``path``, computed on the host; raises
        SealError."""

    # -- derived from the above (a transport may do them in one round trip) ------------------
    def tree_seal_later(self, path, ignore):
        """tree_seal started now and collected later: returns a function that returns the seal (or
        raises SealError), so that trees on two hosts, or two trees of one host, are sealed at once.
        Here the seal is computed now; a transport that can seal in the background overrides it."""
        seal = self.tree_seal(path, ignore)
        return lambda: seal

    def mount_of(self, path):
        """The mount table entry of the filesystem holding ``path`` (the deepest mount point above it)."""
        return deepest_mount(self.realpath(path), self.mount_table())

    def stacked_mounts(self, path):
        """The mounts stacked on the mount point ``path``, lowest first."""
        return stack_at(self.realpath(path), self.mount_table())

    def is_mount_point(self, path):
        real = self.realpath(path)
        return any(entry['mount_point'] == real for entry in self.mount_table())

    def is_empty_dir(self, path):
        """True for a real folder (not a symlink) with nothing in it."""
        try:
            return self.is_dir(path) and not self.is_link(path) and not self.listdir(path)
        except OSError:
            return False
