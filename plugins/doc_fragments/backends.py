# -*- coding: utf-8 -*-
# Copyright: storage.mobility contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    """What every module of the collection shares: its authors, the ``backends`` option and what its drivers need."""

    DOCUMENTATION = r'''
author:
  - storage.mobility maintainers (@storage-mobility)
requirements:
  - The Python package C(openstacksdk) on the host that runs the module, for backends of driver V(manila)
    or V(cinder) (shares, share migrations and replicas in Manila; volumes in Cinder)
  - C(btrfs-progs) for backends of driver V(btrfs)
  - Root and C(mount) (util-linux) for backends whose export helper is V(bind)
options:
  backends:
    description:
      - The storage backends this run may use, with their pools.
      - Declare them once in inventory variables and pass them to every module of the collection
        through C(module_defaults) on the action group C(group/storage.mobility.mobility).
      - A pool is addressed V(host@backend#pool), for example V(stor1@generic1#alpha).
      - A backend with driver V(manila) or V(cinder) stands for one OpenStack service; its pools are the
        ones the service reports (V(devhost@alpha#pool1)), and it takes the OpenStack connection options
        (O(backends[].cloud), O(backends[].auth) and the others below). One backend per OpenStack driver
        in a run. These need the Python library C(openstacksdk) on the host that runs the module.
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
          - V(btrfs) keeps shares as btrfs subvolumes in pools on btrfs filesystems.
          - V(manila) drives OpenStack Manila (shares, share migration, share replicas).
          - V(cinder) drives OpenStack Cinder (volumes, volume migration).
          - V(file) keeps volumes as sparse image files (raw or qcow2) in pools that are folders (docs/volumes.md).
        type: str
        default: posix
        choices: [btrfs, posix, file, manila, cinder]
      host:
        description: The C(host) part of V(host@backend#pool).
        type: str
        default: localhost
      transport:
        description:
          - How the driver reaches its storage. V(local) is this machine, V(rest) an OpenStack service's API,
            V(ssh) another machine reached with OpenSSH (O(backends[].ssh) says how; drivers V(posix) and V(btrfs)).
          - Defaults to V(rest) for the drivers V(manila) and V(cinder), to V(local) for the others.
        type: str
        choices: [local, rest, ssh]
      ssh:
        description:
          - How to reach the storage host of a backend with O(backends[].transport=ssh) (see docs/hosts.md).
          - One OpenSSH connection per host serves every module call of a run (a ControlMaster whose socket is in
            the controller user's private folder C(<tmp>/mobility-cm-<uid>), ended by C(ControlPersist) a minute after
            its last use). Every file operation of a module call goes to one helper process started on the host
            with C(python3), which must be installed there.
          - Backends on the same O(backends[].host) must declare the same ssh options.
        type: dict
        suboptions:
          inventory_host:
            description:
              - The inventory host whose connection variables give the options this backend leaves out, read on
                the controller by the module's action plugin before the module runs (see docs/hosts.md).
              - C(ansible_host) gives O(backends[].ssh.address) (default the inventory name), C(ansible_port) the
                port, C(ansible_user) the user, C(ansible_ssh_private_key_file) the key file, C(ansible_become)
                O(backends[].ssh.become) (C(sudo) to root only), and C(-o UserKnownHostsFile=) and
                C(-o StrictHostKeyChecking=accept-new) in C(ansible_ssh_common_args) or C(ansible_ssh_extra_args)
                the known_hosts file and O(backends[].ssh.host_key_checking=accept-new).
              - An option set in O(backends[].ssh) itself wins. Passwords in the inventory are never used.
              - Only when the module runs as an Ansible task (not when its file is run by hand).
            type: str
          address:
            description: Host name or IP address to connect to. Defaults to O(backends[].host).
            type: str
          user:
            description: Login user. Defaults to ssh's own default (the controller's user or its ssh config).
            type: str
          port:
            description: TCP port of the host's sshd. Defaults to ssh's own default (22 or its ssh config).
            type: int
          private_key_file:
            description:
              - Private key file on the controller (absolute path). Without it, ssh-agent and ssh's default keys are used.
              - Passwords are never used (ssh runs with C(BatchMode=yes)).
            type: path
          known_hosts_file:
            description:
              - known_hosts file (absolute path) holding the host's key. Defaults to C(~/.ssh/known_hosts).
            type: path
          host_key_checking:
            description:
              - V(strict) refuses a host whose key is not in the known_hosts file or differs from it.
              - V(accept-new) adds the key of a host not yet in the file, and still refuses a changed key.
            type: str
            choices: [strict, accept-new]
            default: strict
          become:
            description:
              - Run the helper and every command on the host as root through C(sudo -n) (passwordless sudo is
                needed; a refusal fails naming the host).
            type: bool
            default: false
          direct_address:
            description:
              - The address other storage hosts reach this host at for a direct stream (O(backends[].data_path=direct)),
                for example on a storage network. Defaults to O(backends[].ssh.address).
              - The sending host checks this host's key against the key the controller's known_hosts file holds for
                O(backends[].ssh.address), whatever address it connects to.
            type: str
          direct_key_file:
            description:
              - Private key file ON THIS HOST (absolute path) that its ssh uses when this host sends a stream directly
                to another storage host (O(backends[].data_path=direct)).
              - Without it, the operator's ssh agent (E(SSH_AUTH_SOCK) on the controller) is forwarded for that one
                stream only, over the run's connection to this host.
            type: path
          data_node_key_file:
            description:
              - Private key file ON THE DATA NODE (absolute path, no V(%), V(,) or spaces) with which a data node logs
                in to this host (as O(backends[].ssh.user), at O(backends[].ssh.direct_address) or
                O(backends[].ssh.address)) for a host-assisted migration between two storage hosts; it mounts the
                share's folder with sshfs and verifies the copy on this host's disk (docs/hosts.md).
              - Without it, the data node's own ssh agent or default keys.
            type: path
      data_path:
        description:
          - How data moved from this backend's host to another storage host travels (btrfs send/receive between
            two hosts, docs/hosts.md). When not set, V(direct).
          - V(direct) runs C(btrfs send) on this host piped into C(ssh <other host> btrfs receive); the data goes host
            to host and never through the controller.
          - V(controller) relays the stream through the machine that runs the module (the storage hosts need no
            access to each other).
        type: str
        choices: [direct, controller]
      pools:
        description:
          - Pool names mapped to their settings; each pool needs C(path), an absolute folder.
          - The collection keeps its records for the pool in C(<path>/.mobility/), shares in
            C(<path>/shares/) and snapshots in C(<path>/snapshots/).
          - Required for the drivers that keep their own pools; not allowed for V(manila) and V(cinder).
        type: dict
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
      cloud:
        description:
          - OpenStack only. Name of a cloud in C(clouds.yaml) (looked up where openstacksdk looks, for
            example C(~/.config/openstack/clouds.yaml), or in the file named by E(OS_CLIENT_CONFIG_FILE)).
          - Without O(backends[].cloud) and O(backends[].auth), openstacksdk reads the E(OS_*) environment variables.
        type: str
      auth:
        description:
          - OpenStack only. Authentication parameters of O(backends[].auth_type), for example C(auth_url),
            C(username), C(password), C(project_name), C(user_domain_name), C(project_domain_name), or
            C(application_credential_id) and C(application_credential_secret).
        type: dict
      auth_type:
        description: OpenStack only. The keystoneauth plugin, for example V(password), V(v3applicationcredential) or V(admin_token).
        type: str
      region_name:
        description: OpenStack only. Region of the service.
        type: str
      interface:
        description: OpenStack only. Which endpoint of the service catalog to use.
        type: str
        choices: [public, internal, admin]
      cacert:
        description: OpenStack only. CA bundle that verifies the service's TLS certificate.
        type: path
      validate_certs:
        description: OpenStack only. Verify TLS certificates. When not set, the cloud's setting (default on) applies.
        type: bool
      client_cert:
        description: OpenStack only. Client certificate for TLS client authentication.
        type: path
      client_key:
        description: OpenStack only. Key of O(backends[].client_cert).
        type: path
      endpoint_override:
        description:
          - OpenStack only. URL of the service, instead of the one in the service catalog (for example
            V(http://127.0.0.1:8786/) for a Manila without Keystone).
        type: str
      api_version:
        description:
          - OpenStack only. The highest API microversion the collection may use with this backend, for
            example V(2.65). Without it the highest one the service offers. Features that need a newer
            microversion fail with an error that names both.
        type: str
  events:
    description:
      - Where this run also sends the lines of the event journal and writes per-share, per-replica
        and per-volume metrics (docs/events.md). Both are optional and never fail or hold up a step; what goes wrong
        becomes a warning.
      - Set it once for every module through C(module_defaults) on C(group/storage.mobility.mobility),
        or with the environment variables E(MOBILITY_EVENTS_WEBHOOK) and E(MOBILITY_METRICS_DIR)
        (for example AWX's extra environment variables).
      - Applies to the pools of the collection's own drivers (V(posix), V(btrfs)).
    type: dict
    suboptions:
      webhook_url:
        description:
          - An V(http://) or V(https://) URL that receives each journal line as it is written, in a
            C(POST) with the header C(Content-Type) set to V(application/json), one line per request.
          - A line the receiver does not take (no answer within O(events.webhook_timeout), a
            connection error, a 5xx, 408 or 429) is tried again up to O(events.webhook_retries) times;
            when those tries are used up the webhook is given up for the rest of the run. The journal
            keeps every line either way.
          - When not set, E(MOBILITY_EVENTS_WEBHOOK) is used; without either nothing is sent.
          - The URL may carry a token (in its path or query); it is not shown in the module's output,
            and warnings name only its scheme and host.
        type: str
      webhook_timeout:
        description: Seconds one attempt may take.
        type: float
        default: 2.0
      webhook_retries:
        description: How many more times a line is tried after its first attempt failed (0 to 10).
        type: int
        default: 2
      webhook_validate_certs:
        description: Verify the TLS certificate of an V(https://) webhook.
        type: bool
        default: true
      metrics_dir:
        description:
          - A folder on each storage host (for example node_exporter's textfile collector folder) where
            every run that is not in check mode rewrites one file per pool,
            C(storage_mobility_<host>_<backend>_<pool>.prom), by an atomic rename.
          - The folder must exist; when not set, E(MOBILITY_METRICS_DIR) is used; without either no
            file is written.
        type: path
'''
