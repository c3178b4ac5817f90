# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r'''
options:
  wait:
    description:
      - Wait until the operation reaches its goal state before returning.
      - With V(false) the module returns as soon as the operation has been started; run it again to
        see the progress or to wait.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait at most. On timeout the module fails with the last state it saw; the
        operation itself goes on and a rerun attaches to it.
    type: int
    default: 3600
  wait_sleep:
    description: Seconds between two polls while waiting.
    type: int
    default: 5
'''
