#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
module: data_mount
short_description: Mount a share export on a data node, or unmount it
version_added: 0.1.0
description:
  - Mounts one share export at a path of the data node it runs on, through a mount template with
    the reference placeholders "%(proto)s", "%(options)s", "%(export)s" and "%(path)s",
    or unmounts it.
  - A template is split into arguments (shell-like quoting) before the values are put in, so a value
    with spaces or shell syntax always stays one argument, and no shell ever runs. "%(options)s"
    standing alone becomes C(-o <options joined with commas>), or nothing without options.
  - Runs on the data node itself (the C(data_nodes) group), usually from the role
    C(storage.mobility.data_mover).
  - Mounting needs root, except with O(helper=none), which mounts nothing.
author:
  - storage.mobility maintainers (@storage-mobility)
requirements:
  - Root on the data node, except with O(helper=none)
  - C(mount) and C(umount) (util-linux) on the data node
  - For O(helper=nfs), C(mount.nfs) (Debian C(nfs-common), RHEL C(nfs-utils)); for O(helper=cifs), C(mount.cifs)
    (C(cifs-utils)); for O(helper=sshfs), C(sshfs) and C(fuse3)
extends_documentation_fragment: [storage.mobility.attributes]
attributes:
  check_mode:
    support: full
    details: Returns the planned O(ignore:actions) and the command; mounts nothing.
  diff_mode:
    support: none
    details: Nothing to compare; RV(actions) says what changed.
notes:
  - A mount point this module creates holds a marker file (hidden under the mount). After
    unmounting, with O(remove_path), a folder holding nothing but that marker is removed, and so
    are the parent folders the module created the same way. Other folders are never removed.
options:
  path:
    description:
      - Absolute path of the mount point. It is created when missing.
      - With O(helper=none) nothing is mounted there; the option is then only informational.
    type: path
    required: true
  state:
    description:
      - V(mounted) mounts the export at O(path) (a mount of the same export in the same mode is left
        as it is; a different mode is remounted; anything else mounted there is an error).
      - V(unmounted) unmounts O(path); when nothing is mounted there this is no change.
    type: str
    choices: [mounted, unmounted]
    default: mounted
  helper:
    description:
      - How the export is reached.
      - V(bind) bind-mounts a local folder ("mount --bind %(export)s %(path)s"); read-only takes a
        second C(mount -o remount,bind,ro).
      - V(nfs) and V(cifs) use "mount -t nfs|cifs %(options)s %(export)s %(path)s".
      - V(custom) uses O(mount_template), by default the reference's.
      - V(none) mounts nothing, for folders the data node already reads; RV(mount_path) is the
        export itself.
      - V(sshfs) mounts the folder O(export) of another storage host with sshfs (FUSE over ssh), reached
        as O(ssh) says, with C(sshfs -o [ro,]<options>,BatchMode=yes,StrictHostKeyChecking=yes,UserKnownHostsFile=...,
        HostKeyAlias=mobility-storage-host,IdentityFile=...,Port=... [user@]address:export path), an
        argument list, no template. The host's keys are written into a private temporary file for the
        mount and removed once sshfs has connected. A stale sshfs mount at O(path) (its process killed,
        its connection cut) is unmounted before mounting again; unmounting falls back to C(umount -l).
        SFTP carries whole-second times and no xattrs or hard links, so a copy through it is completed and
        verified on the hosts themselves (see O(storage.mobility.data_copy#module:hosts)).
    type: str
    choices: [bind, none, nfs, cifs, custom, sshfs]
    required: true
  export:
    description:
      - What to mount. A local folder for V(bind) and V(none), V(server:/export) for V(nfs),
        V(//server/share) for V(cifs). Required except for V(custom) templates that name their own
        source.
      - May not start with V(-) or contain NUL or a newline.
      - With O(state=unmounted), when given, a mount of something else at O(path) is not touched.
    type: str
  proto:
    description: The value of "%(proto)s". Defaults to V(nfs) for O(helper=nfs), V(cifs) for O(helper=cifs).
    type: str
  options:
    description:
      - Extra mount options, joined with commas into one C(-o) value, for example V([vers=4.1]).
      - With O(read_only), V(ro) is added (except for V(bind), which remounts).
    type: list
    elements: str
    default: []
  read_only:
    description:
      - Mount read-only and verify with statvfs that the mount is read-only; a mount that is still
        writable is unmounted again and the module fails.
      - With O(helper=none) nothing is mounted, so this cannot be enforced; the module warns when the
        folder is writable.
    type: bool
    default: false
  mount_template:
    description:
      - The mount command. Defaults to the helper's ready template; for V(custom) to the reference
        template "mount -vt %(proto)s %(options)s %(export)s %(path)s".
    type: str
  unmount_template:
    description: The unmount command.
    type: str
    default: umount -v %(path)s
  remove_path:
    description: After unmounting, remove the mount point when this module created it and it is empty.
    type: bool
    default: true
  ssh:
    description:
      - For O(helper=sshfs) only, how this data node reaches the storage host that holds O(export).
      - C(host) (its name, for messages), C(address), C(port), C(user), C(key_file) (a private key file ON
        this data node, an absolute path without commas, V(%) or spaces; without it the data node's ssh agent or
        default keys) and C(host_keys) (the host's known_hosts lines for the name C(mobility-storage-host),
        required since a host key is never accepted unseen). No password option exists.
    type: dict
'''

EXAMPLES = r'''
- name: Mount a share of another storage host read-only with sshfs
  storage.mobility.data_mount:
    path: /tmp/3f1c0a4e/source
    helper: sshfs
    export: /srv/pools/ext4/projects
    read_only: true
    ssh:
      host: stora
      address: 192.0.2.11
      user: root
      key_file: /root/.ssh/id_data_node
      host_keys: ["mobility-storage-host ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI..."]
  become: true

- name: Mount the source share read-only over NFS
  storage.mobility.data_mount:
    path: /tmp/3f1c0a4e/source
    helper: nfs
    export: stor1:/srv/exports/projects
    options: [vers=4.1]
    read_only: true
  become: true
  register: source_mount

- name: Bind-mount a local share instance
  storage.mobility.data_mount:
    path: /tmp/3f1c0a4e/destination
    helper: bind
    export: /srv/pools/beta/shares/projects
  become: true

- name: Mount with the reference template
  storage.mobility.data_mount:
    path: /tmp/3f1c0a4e/source
    helper: custom
    proto: nfs
    export: stor1:/srv/exports/projects
    mount_template: mount -vt %(proto)s %(options)s %(export)s %(path)s

- name: Unmount
  storage.mobility.data_mount:
    path: /tmp/3f1c0a4e/source
    helper: nfs
    state: unmounted
  become: true
'''

RETURN = r'''
mount_path:
  description: Where the tree is readable on the data node (the export itself with O(helper=none)).
  returned: always
  type: str
  sample: /tmp/3f1c0a4e/source
mounted:
  description: Whether the export is mounted at O(path) after the run (in check mode, would be).
  returned: always
  type: bool
  sample: true
read_only:
  description: Whether RV(mount_path) is read-only, measured with statvfs; V(null) when unmounted.
  returned: always
  type: bool
  sample: true
cmd:
  description: The argv of the mount, remount or unmount command run (in check mode, the one that would run).
  returned: always
  type: list
  elements: str
  sample: [mount, -t, nfs, -o, "vers=4.1,ro", "stor1:/srv/exports/projects", /tmp/3f1c0a4e/source]
actions:
  description: What the run did, or would do in check mode.
  returned: always
  type: list
  elements: str
  sample: ["create mount point /tmp/3f1c0a4e/source", "mount stor1:/srv/exports/projects at /tmp/3f1c0a4e/source read-only"]
'''

import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.storage.mobility.plugins.module_utils.data_mount import (
    HELPERS, REFERENCE_UNMOUNT_TEMPLATE, DataMount)
from ansible_collections.storage.mobility.plugins.module_utils.errors import StorageError
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type='path', required=True),
            state=dict(type='str', choices=['mounted', 'unmounted'], default='mounted'),
            helper=dict(type='str', choices=list(HELPERS), required=True),
            export=dict(type='str'),
            proto=dict(type='str'),
            options=dict(type='list', elements='str', default=[]),
            read_only=dict(type='bool', default=False),
            mount_template=dict(type='str'),
            unmount_template=dict(type='str', default=REFERENCE_UNMOUNT_TEMPLATE),
            remove_path=dict(type='bool', default=True),
            ssh=dict(type='dict'),
        ),
        supports_check_mode=True,
    )
    p = module.params
    try:
        mount = DataMount(CommandRunner(module.run_command), p['path'], p['helper'], export=p['export'],
                          proto=p['proto'], options=p['options'], read_only=p['read_only'],
                          mount_template=p['mount_template'], unmount_template=p['unmount_template'],
                          remove_path=p['remove_path'], check_mode=module.check_mode, ssh=p['ssh'])
        result = mount.mounted() if p['state'] == 'mounted' else mount.unmounted()
    except StorageError as exc:
        module.fail_json(msg=exc.message, error_type=exc.error_type, **exc.details)
    except Exception as exc:  # an unexpected failure: report it whole rather than a bare traceback
        module.fail_json(msg='Unexpected error: %s' % exc, exception=traceback.format_exc())
    for warning in result.pop('warnings'):
        module.warn(warning)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
