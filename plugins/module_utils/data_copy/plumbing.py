# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Moving the entries of a walk to the comparing side: from a forked walking process through a
pipe (or from a thread where fork is not available) into a queue, in batches, then the walk's
summary; a failure on the walking side is raised on the reading side.

Shipped to the data node with the worker: standard library only, Python 3.8+.
"""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import multiprocessing
import queue

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import lifeline
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.fileread import Cancelled
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.walk import batches

# Put in a queue after the last batch of a walk.
END = object()


class Failure(object):
    """Put in a queue instead of a batch: the walk failed with ``exc``, raised by the Reader."""

    def __init__(self, exc):
        self.exc = exc


def produce(walker, out):
    """In a thread: put the walk's batches into the queue ``out``, then END (or a Failure)."""
    try:
        for batch in batches(walker):
            out.put(batch)
        out.put(END)
    except BaseException as exc:  # pylint: disable=broad-except
        out.put(Failure(exc))


class Reader(object):
    """The entries of one side, taken from a queue of batches; ``next()`` returns END after the last."""

    def __init__(self, source_queue):
        self.queue = source_queue
        self.batch = []
        self.index = 0

    def next(self):
        if self.index >= len(self.batch):
            item = self.queue.get()
            if isinstance(item, Failure):
                raise item.exc
            if item is END:
                return END
            self.batch = item
            self.index = 0
        self.index += 1
        return self.batch[self.index - 1]


def walk_in_process(walker, conn, parent=None, inherited=()):
    """In a forked process: send the walk's batches (see batches), then its summary.
    ``inherited``: the reading ends this process must not hold (see lifeline): holding its own, it
    would wait forever on a full pipe once the reader died."""
    lifeline.child_start(parent, inherited)
    try:
        for batch in batches(walker):
            conn.send(batch)
        conn.send(('end', walker.summary()))
    except BaseException as exc:  # pylint: disable=broad-except
        try:
            conn.send(('failed', exc if isinstance(exc, Cancelled) else RuntimeError('%s: %s' % (type(exc).__name__,
                                                                                                 exc))))
        except Exception:  # pylint: disable=broad-except
            pass
    finally:
        conn.close()


def relay(conn, out, summaries, index):
    """In a thread of the comparing process: move one walking process's entries into a queue."""
    try:
        while True:
            message = conn.recv()
            if isinstance(message, list):
                out.put(message)
                continue
            if message[0] == 'end':
                summaries[index] = message[1]
                out.put(END)
            else:
                out.put(Failure(message[1]))
            return
    except BaseException as exc:  # pylint: disable=broad-except
        out.put(Failure(RuntimeError('the walking process stopped: %s: %s' % (type(exc).__name__, exc))))


def produce_summary(walker, out, summaries, index):
    """In a thread: produce, then keep the walk's summary in ``summaries[index]``."""
    produce(walker, out)
    summaries[index] = walker.summary()


def fork_context():
    """The multiprocessing context that forks, or None where there is none."""
    try:
        return multiprocessing.get_context('fork')
    except ValueError:
        return None


def drain(queues, thread):
    """Empty ``queues`` until ``thread`` ends (it may wait to put into a full one)."""
    while thread.is_alive():
        for out in queues:
            try:
                out.get_nowait()
            except queue.Empty:
                pass
        thread.join(0.01)
