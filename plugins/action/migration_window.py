# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin of storage.mobility.migration_window: fills ssh options from the inventory (plugin_utils/backends_action.py)."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

from ansible_collections.storage.mobility.plugins.plugin_utils.backends_action import BackendsAction


class ActionModule(BackendsAction):
    """storage.mobility.migration_window with ``ssh.inventory_host`` resolved on the controller."""
