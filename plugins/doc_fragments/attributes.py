# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """The attributes every module documents, in three forms.

    ``storage.mobility.attributes`` says what check mode and diff mode are; add
    ``storage.mobility.attributes.info_module`` for a module that only reads, or
    ``storage.mobility.attributes.state_module`` for one that brings an object to a state and
    returns it. A module may still set ``support`` and ``details`` of its own."""

    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in check mode and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check mode), when in diff mode.
'''

    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details: The module only reads.
  diff_mode:
    support: none
    details: Nothing changes, so there is nothing to compare.
'''

    STATE_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - Validates the request, then returns the planned actions and the predicted object (as the module
        returns it after a real run); changes nothing and never waits.
  diff_mode:
    support: full
    details: Returns the object (share, replica or volume) before and after.
'''
