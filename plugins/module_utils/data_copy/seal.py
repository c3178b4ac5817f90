# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Tree seals: one digest over every entry of a tree as ``lstat`` sees it.

A seal covers, for the root (``.``) and every path below it, the relative path and the entry's
``st_mode`` (type and permission bits), inode number, size, modification and change times in
nanoseconds, owner, group and link count. Names in the ignore list are skipped at any depth, as
the verification skips them. The walk is the verification's (``walk.Walker``): depth first,
names sorted as bytes, the root followed when it is a symlink. Nothing is read but the folders
and the ``lstat`` of each entry, and each entry goes into the digest as it is met, so a seal of a
million entries needs no more memory than one of ten.

Why it proves that nothing changed: every change to an entry (its content, mode, owner, xattrs
and ACLs, link count, a rename of it) sets its change time to the current time, and no program can
set a change time back; a folder whose entries change gets a new modification and change time. So
two equal seals of one tree, taken at two moments, mean that nothing in the tree changed in
between (see docs/data_mover.md for the limits: the change time's resolution, and damage that
bypasses the filesystem).

The data mover seals both trees as it hashes them and once more afterwards, and the share
migration manager seals both instances again just before it switches; equal seals bind the
verification's hashes to the trees as they are at the switch. Shipped to the data node with the
worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import errno
import hashlib
import multiprocessing
import os
import stat

SEAL_FORMAT = 'seal1'
# Lines fed to the digest at once: the same digest, fewer calls.
BATCH = 256


class SealError(Exception):
    """A tree could not be sealed (a folder that cannot be listed, an entry that cannot be read)."""


class TreeSeal(object):
    """A seal being computed: ``add`` each entry in walk order, then ``hexdigest``."""

    def __init__(self):
        self._digest = hashlib.sha256()
        self._lines = []
        self.entries = 0

    def add(self, rel, st):
        """Add the entry at ``rel`` (bytes, relative, ``.`` for the root) with its stat result."""
        self.entries += 1
        lines = self._lines
        lines.append(b'%s\0%d %d %d %d %d %d %d %d\n' % (
            rel, st.st_mode, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_uid, st.st_gid,
            st.st_nlink))
        if len(lines) >= BATCH:
            self._digest.update(b''.join(lines))
            del lines[:]

    def hexdigest(self):
        if self._lines:
            self._digest.update(b''.join(self._lines))
            del self._lines[:]
        return '%s:sha256:%s' % (SEAL_FORMAT, self._digest.hexdigest())


def _children(rel, full, ignore):
    try:
        names = [name for name in os.listdir(full) if name not in ignore]
    except OSError as exc:
        raise SealError('Failed to seal the tree: cannot list %s: %s' % (os.fsdecode(full), exc.strerror))
    names.sort()
    return [name if rel == b'.' else rel + b'/' + name for name in names]


def tree_seal(root, ignore=()):
    """The seal of the tree at ``root`` (see the module's description), a string
    ``seal1:sha256:<hex>``. Raise SealError when the root is not a folder or a folder cannot be
    listed."""
    return seal_walk(root, ignore)['seal']


def _count(counts, st):
    counts['entries'] += 1
    mode = st.st_mode
    if stat.S_ISREG(mode):
        counts['files'] += 1
        counts['bytes'] += st.st_size
    elif stat.S_ISDIR(mode):
        counts['directories'] += 1
    elif stat.S_ISLNK(mode):
        counts['symlinks'] += 1


def seal_walk(root, ignore=(), newer_than=None, newer_limit=0, ignored=None):
    """Seal the tree at ``root``; return ``seal``, the ``counts`` of its entries (entries, files,
    bytes, directories, symlinks; the root included) and, with ``newer_than`` (ns), the entries
    whose change time is after it: ``newer`` (up to ``newer_limit`` of (relative path, change
    time) in walk order) and ``newer_count`` (all of them); with ``ignored`` (a state.Ignored),
    ``ignored``: it, with the paths the ignore list left out added. Raise SealError as tree_seal."""
    root = os.fsencode(root)
    ignore = frozenset(os.fsencode(name) for name in ignore or ())

    def children(rel, full):
        if ignored is None:
            return _children(rel, full, ignore)
        kept = _children(rel, full, ())
        left_out = [item for item in kept if item.rsplit(b'/', 1)[-1] in ignore]
        for item in left_out:
            path = os.path.join(full, item.rsplit(b'/', 1)[-1])
            ignored.add(item, os.path.isdir(path) and not os.path.islink(path), path)
        return [item for item in kept if item.rsplit(b'/', 1)[-1] not in ignore] if left_out else kept

    seal = TreeSeal()
    counts = {'entries': 0, 'files': 0, 'bytes': 0, 'directories': 0, 'symlinks': 0}
    newer = []
    found = {'newer_count': 0}

    def add(rel, st):
        seal.add(rel, st)
        _count(counts, st)
        if newer_than is not None and st.st_ctime_ns > newer_than:
            found['newer_count'] += 1
            if len(newer) < newer_limit:
                newer.append((rel, st.st_ctime_ns))

    try:
        root_st = os.stat(root)
    except OSError as exc:
        raise SealError('Failed to seal the tree %s: %s' % (os.fsdecode(root), exc.strerror))
    if not stat.S_ISDIR(root_st.st_mode):
        raise SealError('Failed to seal the tree %s: it is not a folder' % os.fsdecode(root))
    add(b'.', root_st)
    prefix = os.path.join(root, b'')
    stack = [iter(children(b'.', root))]
    lstat = os.lstat
    while stack:
        for rel in stack[-1]:
            full = prefix + rel
            try:
                st = lstat(full)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # vanished since the folder was listed (the folder's times say so)
                raise SealError('Failed to seal the tree %s: %s: %s' % (os.fsdecode(root), os.fsdecode(full),
                                                                        exc.strerror))
            add(rel, st)
            if stat.S_ISDIR(st.st_mode):
                stack.append(iter(children(rel, full)))
                break
        else:
            stack.pop()
    return {'seal': seal.hexdigest(), 'counts': counts, 'newer': newer, 'newer_count': found['newer_count'],
            'ignored': ignored}


def _seal_in_process(root, ignore, watch, conn):
    try:
        conn.send(('ok', seal_walk(root, ignore, *watch)))
    except BaseException as exc:  # pylint: disable=broad-except
        conn.send(('failed', str(exc)))
    finally:
        conn.close()


def seal_later(root, ignore=()):
    """Start sealing the tree at ``root`` in a forked process (one CPU) and return a function that
    waits for it and returns its seal, raising SealError as tree_seal does. Where no process can be
    forked (no fork on the platform, a limit on processes) the seal is computed now and the function
    returns it. The function must be called once (it reaps the process); a second call raises
    SealError."""
    started = _start_seal_process(root, ignore)
    if started is None:
        return _sealed_now(root, ignore)
    child, receiving = started
    state = {'waited': False}

    def wait():
        if state['waited']:
            raise SealError('Failed to seal the tree %s: its seal was already collected' % os.fsdecode(root))
        state['waited'] = True
        outcome, value = 'interrupted', None
        try:
            try:
                outcome, value = receiving.recv()
            except EOFError:
                outcome, value = 'failed', 'the sealing process of %s stopped without an answer' % os.fsdecode(root)
        finally:
            # A process that answered ends by itself; one still walking (this wait was interrupted)
            # is stopped.
            child.join(10 if outcome != 'interrupted' else 0)
            if child.is_alive():
                child.kill()
                child.join()
            receiving.close()
        if outcome != 'ok':
            raise SealError(value)
        return value['seal']
    return wait


def _start_seal_process(root, ignore):
    """(process, receiving end of its pipe) of a forked seal_walk of ``root``, or None."""
    try:
        context = multiprocessing.get_context('fork')
    except ValueError:
        return None
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_seal_in_process, args=(root, list(ignore or ()), (), sending), name='tree-seal')
    child.daemon = True
    try:
        child.start()
    except OSError:
        receiving.close()
        return None
    finally:
        sending.close()
    return child, receiving


def _sealed_now(root, ignore):
    walked = {}
    try:
        walked['seal'] = tree_seal(root, ignore)
    except SealError as exc:
        walked['error'] = str(exc)
    state = {'waited': False}

    def computed():
        if state['waited']:
            raise SealError('Failed to seal the tree %s: its seal was already collected' % os.fsdecode(root))
        state['waited'] = True
        if 'error' in walked:
            raise SealError(walked['error'])
        return walked['seal']
    return computed


def tree_seals(roots, ignore=()):
    """The seals of several trees, each but the last walked in a forked process at the same time
    (one CPU each); in turn where processes cannot be forked. Raise SealError naming the first
    tree that could not be sealed."""
    return [walked['seal'] for walked in seal_walks([(root, None, 0, None) for root in roots], ignore)]


def seal_walks(specs, ignore=()):
    """seal_walk of several trees at once, ``specs`` a list of (root, newer_than, newer_limit, ignored):
    each but the last walked in a forked process (one CPU each); in turn where processes cannot be
    forked. Raise SealError naming the first tree that could not be sealed."""
    try:
        context = multiprocessing.get_context('fork')
    except ValueError:
        context = None
    specs = list(specs)
    if context is None or len(specs) < 2:
        return [seal_walk(spec[0], ignore, *spec[1:]) for spec in specs]
    children = []
    try:
        for spec in specs[:-1]:
            receiving, sending = context.Pipe(duplex=False)
            child = context.Process(target=_seal_in_process,
                                    args=(spec[0], list(ignore or ()), spec[1:], sending), name='tree-seal')
            child.daemon = True
            child.start()
            sending.close()
            children.append((child, receiving))
        last = seal_walk(specs[-1][0], ignore, *specs[-1][1:])
        walks = []
        for child, receiving in children:
            try:
                outcome, value = receiving.recv()
            except EOFError:
                outcome, value = 'failed', 'the sealing process stopped without an answer'
            if outcome != 'ok':
                raise SealError(value)
            walks.append(value)
        return walks + [last]
    finally:
        for child, receiving in children:
            if child.is_alive():
                child.kill()
            child.join()
            receiving.close()
