# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):

    DOCUMENTATION = r'''
options:
  backends:
    description:
      - The storage backends this run may use, with their pools.
      - Declare them once in inventory variables and pass them to every module of the collection
        through C(module_defaults) on the action group C(group/storage.mobility.mobility).
      - A pool is addressed V(host@backend#pool), for example V(stor1@generic1#alpha).
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: Name of the backend, the C(backend) part of V(host@backend#pool).
        type: str
        required: true
      driver:
        description:
          - The storage driver of the backend.
          - V(posix) keeps shares as folders in pools that are folders on any Linux filesystem.
        type: str
        default: posix
        choices: [posix]
      host:
        description: The C(host) part of V(host@backend#pool).
        type: str
        default: localhost
      transport:
        description: How the driver reaches its storage. V(local) is this machine.
        type: str
        default: local
        choices: [local]
      pools:
        description:
          - Pool names mapped to their settings; each pool needs C(path), an absolute folder.
          - The collection keeps its records for the pool in C(<path>/.mobility/), shares in
            C(<path>/shares/) and snapshots in C(<path>/snapshots/).
        type: dict
        required: true
      export:
        description: How users on this machine reach the shares of the backend.
        type: dict
        suboptions:
          helper:
            description:
              - V(bind) bind-mounts each share at C(<root>/<share>), a path that stays the same when
                the share migrates; read-only access rules and read-only migration phases really
                refuse writes. Needs root.
              - V(none) serves the share at its folder in the pool; access levels are recorded but
                not enforced. Works without root.
            type: str
            default: none
            choices: [bind, none]
          root:
            description: Folder under which V(bind) exports are mounted. Required with V(bind).
            type: path
      migration_ignore_files:
        description: Names never copied by a host-assisted migration, at any depth. When not set, V(lost+found).
        type: list
        elements: str
      replication_domain:
        description: Backends that share a replication domain can replicate to each other.
        type: str
'''
