"""Unit tests for plugins/module_utils/data_mount.py.

Template expansion is tested on its own. DataMount runs against a fake mount table that a
recording runner updates when it "runs" mount and umount, so nothing is mounted here; real bind
mounts (read-only really refusing writes) are tested as root by the data_mount integration target.
"""

from __future__ import annotations

import os

import pytest

from ansible_collections.storage.mobility.plugins.module_utils import data_mount
from ansible_collections.storage.mobility.plugins.module_utils.data_mount import (
    MARKER, MOUNT_TEMPLATES, REFERENCE_MOUNT_TEMPLATE, REFERENCE_UNMOUNT_TEMPLATE, DataMount, expand_template)
from ansible_collections.storage.mobility.plugins.module_utils.errors import (
    CommandError, InvalidRequest, StorageError)


def values(path="/mnt/x", export="srv:/e", proto="nfs", options=""):
    return {"path": path, "export": export, "proto": proto, "options": options}


# --------------------------------------------------------------------------- expand_template


@pytest.mark.parametrize("template, vals, expected", [
    (REFERENCE_MOUNT_TEMPLATE, values(options="vers=4.1,ro"),
     ["mount", "-vt", "nfs", "-o", "vers=4.1,ro", "srv:/e", "/mnt/x"]),
    # no options: the whole "%(options)s" token disappears, no empty argument is left
    (REFERENCE_MOUNT_TEMPLATE, values(), ["mount", "-vt", "nfs", "srv:/e", "/mnt/x"]),
    (MOUNT_TEMPLATES["nfs"], values(options="vers=4.1"), ["mount", "-t", "nfs", "-o", "vers=4.1", "srv:/e", "/mnt/x"]),
    (MOUNT_TEMPLATES["cifs"], values(export="//srv/share", proto="cifs"),
     ["mount", "-t", "cifs", "//srv/share", "/mnt/x"]),
    (MOUNT_TEMPLATES["bind"], values(export="/srv/a"), ["mount", "--bind", "/srv/a", "/mnt/x"]),
    (REFERENCE_UNMOUNT_TEMPLATE, values(), ["umount", "-v", "/mnt/x"]),
    # spaces in values stay inside one argument
    (MOUNT_TEMPLATES["bind"], values(export="/srv/my share", path="/tmp/job 1/source"),
     ["mount", "--bind", "/srv/my share", "/tmp/job 1/source"]),
    # shell syntax is never interpreted: each value is ONE argv token
    (MOUNT_TEMPLATES["bind"], values(export="/srv/a; rm -rf /", path="/mnt/$(reboot)"),
     ["mount", "--bind", "/srv/a; rm -rf /", "/mnt/$(reboot)"]),
    (REFERENCE_MOUNT_TEMPLATE, values(options="ro && rm -rf /", export="srv:/e`id`"),
     ["mount", "-vt", "nfs", "-o", "ro && rm -rf /", "srv:/e`id`", "/mnt/x"]),
    # a value that looks like a quote or a placeholder is not parsed again
    (MOUNT_TEMPLATES["bind"], values(export="/srv/'a\" b", path="/mnt/%(proto)s"),
     ["mount", "--bind", "/srv/'a\" b", "/mnt/%(proto)s"]),
    # quoting in the template itself works like a shell's, then values go in
    ("mount -t %(proto)s '%(export)s' \"%(path)s\"", values(export="srv:/a b"),
     ["mount", "-t", "nfs", "srv:/a b", "/mnt/x"]),
    # placeholders inside a token; %% is a literal percent sign
    ("mount -o%(options)s,x-label=100%% --source=%(export)s %(path)s", values(options="ro"),
     ["mount", "-oro,x-label=100%", "--source=srv:/e", "/mnt/x"]),
    # a token made only of an embedded empty options value disappears
    ("mount %(options)s, %(path)s", values(), ["mount", ",", "/mnt/x"]),
    ("mount x%(options)s %(path)s", values(), ["mount", "x", "/mnt/x"]),
])
def test_expand_template(template, vals, expected):
    assert expand_template(template, vals) == expected


@pytest.mark.parametrize("template, vals, message", [
    ("mount %(device)s %(path)s", values(), "unknown placeholder %(device)s"),
    ("mount -t %(proto)s %(export)s %(path)s", values(proto=None), "uses %(proto)s but no proto"),
    ("mount %(export)s %(path)s", values(export=None), "uses %(export)s but no export"),
    ("mount %(export)s %(path)s", values(export=""), "uses %(export)s but no export"),
    ("mount 'unbalanced %(path)s", values(), "No closing quotation"),
    ("", values(), "it is empty"),
    ("   ", values(), "it is empty"),
    ("mount\x00 %(path)s", values(), "NUL"),
])
def test_expand_template_rejects(template, vals, message):
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace(")", r"\)")):
        expand_template(template, vals)


def test_expand_template_none_is_rejected_not_read_from_stdin():
    # shlex.split(None) would read standard input
    with pytest.raises(InvalidRequest, match="empty"):
        expand_template(None, values())


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("kwargs, message", [
    (dict(path="relative/path", helper="bind", export="/srv/a"), "absolute path"),
    (dict(path="/", helper="bind", export="/srv/a"), "refusing to mount over /"),
    (dict(path="/mnt/a\nb", helper="bind", export="/srv/a"), "newline"),
    (dict(path="/mnt/a\x00b", helper="bind", export="/srv/a"), "NUL"),
    (dict(path="/mnt/a", helper="nfs", export="-oremount"), "starts with '-'"),
    (dict(path="/mnt/a", helper="custom", export="--bind"), "starts with '-'"),
    (dict(path="/mnt/a", helper="nfs", export="srv:/e\nrm"), "newline"),
    (dict(path="/mnt/a", helper="nfs", export=""), "empty"),
    (dict(path="/mnt/a", helper="nfs"), "helper nfs needs an export"),
    (dict(path="/mnt/a", helper="bind"), "helper bind needs an export"),
    (dict(path="/mnt/a", helper="none"), "helper none needs an export"),
    (dict(path="/mnt/a", helper="bind", export="srv:/e"), "absolute path"),
    (dict(path="/mnt/a", helper="nfs", export="srv:/e", proto="-x"), "Invalid proto"),
    (dict(path="/mnt/a", helper="nfs", export="srv:/e", proto="nfs4 -o"), "Invalid proto"),
    (dict(path="/mnt/a", helper="nfs", export="srv:/e", options=["vers=4\n"]), "newline"),
    (dict(path="/mnt/a", helper="nfs", export="srv:/e", options=[""]), "empty"),
    (dict(path="/mnt/a", helper="custom", export="x", mount_template="mount\n%(path)s"), "newline"),
    (dict(path="/mnt/a", helper="webdav", export="x"), "Invalid helper"),
])
def test_invalid_requests(kwargs, message):
    with pytest.raises(InvalidRequest, match=message):
        DataMount(None, **kwargs)


SSH = {"host": "stora", "address": "192.0.2.11", "port": 2222, "user": "root", "key_file": "/root/.ssh/id_dn",
       "host_keys": ["mobility-storage-host ssh-ed25519 AAAAC3Nza"]}


def test_sshfs_argv_is_a_list_with_strict_host_keys_and_no_template():
    mount = DataMount(None, "/tmp/j/source", "sshfs", export="/srv/pools/a b/share", read_only=True, ssh=SSH)
    argv = mount.sshfs_argv("/tmp/x/known_hosts", contained=True)
    assert argv[:4] == ["setsid", "--wait", "sshfs", "-o"]
    options = argv[4].split(",")
    assert options[0] == "ro" and "no_contain_symlinks" in options
    for wanted in ("BatchMode=yes", "StrictHostKeyChecking=yes", "UserKnownHostsFile=/tmp/x/known_hosts",
                   "GlobalKnownHostsFile=/dev/null", "HostKeyAlias=mobility-storage-host", "IdentitiesOnly=yes",
                   "IdentityFile=/root/.ssh/id_dn", "Port=2222"):
        assert wanted in options
    assert not [o for o in options if o.startswith(("User=", "ForwardAgent=", "ClearAllForwardings="))]
    # the path with a space stays one argument, after user@address:
    assert argv[5:] == ["root@192.0.2.11:/srv/pools/a b/share", "/tmp/j/source"]
    assert mount.unmount_argv() == ["umount", "/tmp/j/source"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(ssh=None), "host is required"),
    (dict(ssh=dict(SSH, host_keys=[])), "host_keys must list"),
    (dict(ssh=dict(SSH, key_file="/k/a,b")), "key_file '/k/a,b' must be an absolute path without"),
    (dict(ssh=dict(SSH, address="-oProxyCommand=x")), "is not a host name or an IP address"),
    (dict(ssh=dict(SSH, user="a@b")), "is not a login name"),
    (dict(ssh=dict(SSH, password="x")), "unknown keys password"),
    (dict(mount_template="sshfs %(export)s %(path)s"), "takes no mount or unmount template"),
    (dict(export="relative"), "the absolute path of the tree on the storage host"),
    (dict(options=["a,b"]), "contains a comma"),
])
def test_sshfs_requests_are_checked(kwargs, message):
    params = dict(export="/srv/share", ssh=SSH)
    params.update(kwargs)
    with pytest.raises(InvalidRequest, match=message):
        DataMount(None, "/tmp/j/source", "sshfs", **params)


def test_ssh_is_only_for_sshfs():
    with pytest.raises(InvalidRequest, match="ssh is only for helper sshfs"):
        DataMount(None, "/tmp/j/source", "bind", export="/srv/share", ssh=SSH)


def test_read_only_adds_ro_except_for_bind():
    nfs = DataMount(None, "/mnt/a", "nfs", export="srv:/e", options=["vers=4.1"], read_only=True)
    assert nfs.mount_argv() == ["mount", "-t", "nfs", "-o", "vers=4.1,ro", "srv:/e", "/mnt/a"]
    already = DataMount(None, "/mnt/a", "nfs", export="srv:/e", options=["ro"], read_only=True)
    assert already.mount_argv() == ["mount", "-t", "nfs", "-o", "ro", "srv:/e", "/mnt/a"]
    bind = DataMount(None, "/mnt/a", "bind", export="/srv/a", read_only=True)
    assert bind.mount_argv() == ["mount", "--bind", "/srv/a", "/mnt/a"]
    assert bind.remount_argv(True) == ["mount", "-o", "remount,bind,ro", "/mnt/a"]
    assert nfs.remount_argv(False) == ["mount", "-o", "remount,rw", "/mnt/a"]


def test_custom_defaults_to_reference_template_and_proto_from_helper():
    custom = DataMount(None, "/mnt/a", "custom", export="srv:/e", proto="nfs4")
    assert custom.mount_argv() == ["mount", "-vt", "nfs4", "srv:/e", "/mnt/a"]
    assert custom.unmount_argv() == ["umount", "-v", "/mnt/a"]
    with pytest.raises(InvalidRequest, match="no proto"):
        DataMount(None, "/mnt/a", "custom", export="srv:/e").mount_argv()
    assert DataMount(None, "/mnt/a", "cifs", export="//srv/s").proto == "cifs"


def test_path_is_normalized():
    assert DataMount(None, "/tmp//job/./source/", "bind", export="/srv/a/").path == "/tmp/job/source"


# --------------------------------------------------------------------------- a fake mount table


class FakeMounts:
    """A mount table that the runner below changes; read-only flags per mount point."""

    def __init__(self, monkeypatch):
        self.entries = []
        self.read_only = {}
        monkeypatch.setattr(data_mount, "mount_table", lambda: list(self.entries))
        monkeypatch.setattr(data_mount, "is_read_only",
                            lambda path: self.read_only.get(os.path.realpath(path), False))

    def add(self, point, source, fstype="nfs4", read_only=False):
        self.entries.append({"mount_point": os.path.realpath(point), "root": "/", "options": "rw",
                             "fstype": fstype, "source": source})
        self.read_only[os.path.realpath(point)] = read_only


class FakeRunner:
    """Records argv lists and applies mount/umount/remount to FakeMounts."""

    def __init__(self, mounts, fail=None, ignore_ro=False):
        self.mounts = mounts
        self.calls = []
        self.fail = fail
        self.ignore_ro = ignore_ro

    def run(self, argv, what, check=True):
        self.calls.append(list(argv))
        if self.fail and argv[0] == self.fail:
            raise CommandError("Failed to %s: %s exited with 32: boom" % (what, argv[0]), cmd=argv, rc=32,
                               stdout="", stderr="boom")
        if argv[0] == "mount" and argv[1] == "-o" and argv[2].startswith("remount"):
            self.mounts.read_only[os.path.realpath(argv[-1])] = argv[2].endswith(",ro") and not self.ignore_ro
        elif argv[0] == "mount":
            opts = argv[argv.index("-o") + 1].split(",") if "-o" in argv else []
            self.mounts.add(argv[-1], argv[-2], read_only="ro" in opts and not self.ignore_ro)
        elif argv[0] == "umount":
            point = os.path.realpath(argv[-1])
            self.mounts.entries = [e for e in self.mounts.entries if e["mount_point"] != point]
        return 0, "", ""


@pytest.fixture
def mounts(monkeypatch):
    return FakeMounts(monkeypatch)


def nfs_mount(runner, path, **kwargs):
    kwargs.setdefault("export", "srv:/export/projects")
    kwargs.setdefault("euid", 0)
    return DataMount(runner, str(path), "nfs", **kwargs)


# --------------------------------------------------------------------------- mount


def test_mount_creates_mount_point_mounts_then_is_idempotent(tmp_path, mounts):
    runner = FakeRunner(mounts)
    path = tmp_path / "job-1" / "source"
    result = nfs_mount(runner, path, options=["vers=4.1"], read_only=True).mounted()
    assert result["changed"] and result["mounted"] and result["read_only"]
    assert result["mount_path"] == str(path)
    assert result["cmd"] == ["mount", "-t", "nfs", "-o", "vers=4.1,ro", "srv:/export/projects", str(path)]
    assert result["actions"] == ["create mount point %s" % path,
                                 "mount srv:/export/projects at %s read-only" % path]
    # both folders were made here and carry the marker
    assert sorted(os.listdir(path)) == [MARKER]
    assert sorted(os.listdir(path.parent)) == [MARKER, "source"]

    again = nfs_mount(runner, path, options=["vers=4.1"], read_only=True).mounted()
    assert not again["changed"] and again["mounted"] and again["read_only"]
    assert again["cmd"] == [] and again["actions"] == []
    assert len(runner.calls) == 1


def test_mount_same_source_other_mode_remounts(tmp_path, mounts):
    path = tmp_path / "m"
    path.mkdir()
    mounts.add(path, "srv:/export/projects/")  # a trailing slash is the same source
    runner = FakeRunner(mounts)
    result = nfs_mount(runner, path, read_only=True).mounted()
    assert result["changed"] and result["read_only"]
    assert runner.calls == [["mount", "-o", "remount,ro", str(path)]]
    assert result["actions"] == ["remount %s read-only" % path]


def test_mount_something_else_mounted_is_an_error(tmp_path, mounts):
    path = tmp_path / "m"
    path.mkdir()
    mounts.add(path, "other:/data", fstype="nfs4")
    runner = FakeRunner(mounts)
    with pytest.raises(StorageError, match=r"other:/data \(nfs4\) is mounted there"):
        nfs_mount(runner, path).mounted()
    assert runner.calls == []


def test_check_mode_plans_and_changes_nothing(tmp_path, mounts):
    runner = FakeRunner(mounts)
    path = tmp_path / "job" / "source"
    result = nfs_mount(runner, path, read_only=True, check_mode=True, euid=1000).mounted()
    assert result["changed"] and result["mounted"] and result["read_only"]
    assert result["cmd"][0] == "mount"
    assert result["actions"][0] == "create mount point %s" % path
    assert runner.calls == []
    assert not (tmp_path / "job").exists()


def test_bind_read_only_remounts_after_mounting(tmp_path, mounts, monkeypatch):
    export = tmp_path / "share"
    export.mkdir()
    monkeypatch.setattr(data_mount, "_same_inode", lambda a, b: True)
    runner = FakeRunner(mounts)
    path = tmp_path / "p"
    result = DataMount(runner, str(path), "bind", export=str(export), read_only=True, euid=0).mounted()
    assert runner.calls == [["mount", "--bind", str(export), str(path)],
                            ["mount", "-o", "remount,bind,ro", str(path)]]
    assert result["read_only"] and result["changed"]
    assert result["actions"][-1] == "remount %s read-only" % path


def test_mount_still_writable_is_undone_and_fails(tmp_path, mounts):
    runner = FakeRunner(mounts, ignore_ro=True)
    path = tmp_path / "job" / "source"
    with pytest.raises(StorageError, match="writable after mounting"):
        nfs_mount(runner, path, read_only=True).mounted()
    assert runner.calls[-1] == ["umount", "-v", str(path)]
    assert mounts.entries == []
    assert not (tmp_path / "job").exists()  # the folders made for the mount are gone again


def test_failed_mount_carries_cmd_rc_stderr_and_removes_made_folders(tmp_path, mounts):
    runner = FakeRunner(mounts, fail="mount")
    path = tmp_path / "job" / "source"
    with pytest.raises(CommandError) as info:
        nfs_mount(runner, path).mounted()
    assert info.value.details["rc"] == 32 and info.value.details["stderr"] == "boom"
    assert info.value.details["cmd"][0] == "mount"
    assert "Failed to mount srv:/export/projects at %s" % path in str(info.value)
    assert not (tmp_path / "job").exists()


def test_mount_that_mounts_nothing_fails(tmp_path, mounts):
    class Silent(FakeRunner):
        def run(self, argv, what, check=True):
            self.calls.append(list(argv))
            return 0, "", ""

    with pytest.raises(StorageError, match="nothing is mounted there"):
        nfs_mount(Silent(mounts), tmp_path / "m").mounted()


def test_not_root_fails_naming_root_and_creates_nothing(tmp_path, mounts):
    runner = FakeRunner(mounts)
    path = tmp_path / "job" / "source"
    with pytest.raises(StorageError, match="mounting needs root"):
        nfs_mount(runner, path, euid=1000).mounted()
    assert runner.calls == []
    assert not (tmp_path / "job").exists()


def test_mount_point_that_is_a_file_is_an_error(tmp_path, mounts):
    path = tmp_path / "file"
    path.write_text("x")
    with pytest.raises(StorageError, match="not a folder"):
        nfs_mount(FakeRunner(mounts), path).mounted()


# --------------------------------------------------------------------------- helper none


def test_none_returns_the_export_and_changes_nothing(tmp_path, mounts):
    export = tmp_path / "share"
    export.mkdir()
    runner = FakeRunner(mounts)
    mount = DataMount(runner, str(tmp_path / "unused"), "none", export=str(export), read_only=True, euid=1000)
    result = mount.mounted()
    assert result["mount_path"] == str(export)
    assert not result["changed"] and not result["mounted"] and result["read_only"] is False
    assert "cannot be enforced" in result["warnings"][0]
    assert runner.calls == [] and not (tmp_path / "unused").exists()
    gone = DataMount(runner, str(tmp_path / "unused"), "none", export=str(export), euid=1000).unmounted()
    assert not gone["changed"] and gone["mount_path"] == str(export)


def test_none_export_must_be_a_folder(tmp_path):
    with pytest.raises(StorageError, match="not a folder on this data node"):
        DataMount(None, "/mnt/x", "none", export=str(tmp_path / "missing")).mounted()


# --------------------------------------------------------------------------- unmount


def test_unmount_twice_removes_only_folders_made_here(tmp_path, mounts):
    runner = FakeRunner(mounts)
    job = tmp_path / "job"
    source, destination = job / "source", job / "destination"
    nfs_mount(runner, source).mounted()
    nfs_mount(runner, destination, export="srv:/export/other").mounted()

    first = nfs_mount(runner, source).unmounted()
    assert first["changed"] and not first["mounted"]
    assert first["cmd"] == ["umount", "-v", str(source)]
    assert first["actions"] == ["unmount %s" % source, "remove mount point %s" % source]
    assert sorted(os.listdir(job)) == [MARKER, "destination"]  # the job folder is still in use

    second = nfs_mount(runner, source).unmounted()
    assert not second["changed"] and second["actions"] == [] and second["cmd"] == []

    last = nfs_mount(runner, destination, export="srv:/export/other").unmounted()
    assert last["actions"] == ["unmount %s" % destination, "remove mount point %s" % destination,
                               "remove mount point %s" % job]
    assert not job.exists() and tmp_path.exists()


def test_unmount_keeps_folders_it_did_not_make(tmp_path, mounts):
    path = tmp_path / "mnt"
    path.mkdir()
    mounts.add(path, "srv:/export/projects")
    result = nfs_mount(FakeRunner(mounts), path).unmounted()
    assert result["changed"] and path.is_dir()
    assert result["actions"] == ["unmount %s" % path]


def test_unmount_keeps_a_folder_with_data(tmp_path, mounts):
    runner = FakeRunner(mounts)
    path = tmp_path / "job" / "source"
    nfs_mount(runner, path).mounted()
    mounts.entries = []  # unmounted behind our back, and someone left a file
    (path / "left.txt").write_text("x")
    result = nfs_mount(runner, path).unmounted()
    assert not result["changed"] and (path / "left.txt").exists()


def test_unmount_without_remove_path_keeps_the_folder(tmp_path, mounts):
    runner = FakeRunner(mounts)
    path = tmp_path / "job" / "source"
    nfs_mount(runner, path).mounted()
    result = nfs_mount(runner, path, remove_path=False).unmounted()
    assert result["actions"] == ["unmount %s" % path] and path.is_dir()
    # a later run with remove_path removes the empty folder it made: a change
    later = nfs_mount(runner, path).unmounted()
    assert later["changed"] and later["actions"] == ["remove mount point %s" % path,
                                                     "remove mount point %s" % path.parent]
    assert not (tmp_path / "job").exists()


def test_unmount_check_mode(tmp_path, mounts):
    runner = FakeRunner(mounts)
    path = tmp_path / "job" / "source"
    nfs_mount(runner, path).mounted()
    calls = len(runner.calls)
    result = nfs_mount(runner, path, check_mode=True, euid=1000).unmounted()
    assert result["changed"] and result["cmd"] == ["umount", "-v", str(path)]
    assert result["actions"][0] == "unmount %s" % path
    assert len(runner.calls) == calls and mounts.entries


def test_unmount_refuses_a_foreign_mount(tmp_path, mounts):
    path = tmp_path / "mnt"
    path.mkdir()
    mounts.add(path, "other:/data")
    runner = FakeRunner(mounts)
    with pytest.raises(StorageError, match="Refusing to unmount"):
        nfs_mount(runner, path).unmounted()
    assert runner.calls == []


def test_unmount_template_placeholders(tmp_path, mounts):
    path = tmp_path / "m"
    path.mkdir()
    mounts.add(path, "srv:/export/projects")
    runner = FakeRunner(mounts)
    nfs_mount(runner, path, unmount_template="umount -l -t %(proto)s '%(path)s'").unmounted()
    assert runner.calls == [["umount", "-l", "-t", "nfs", str(path)]]


def test_unmount_needs_root(tmp_path, mounts):
    path = tmp_path / "m"
    path.mkdir()
    mounts.add(path, "srv:/export/projects")
    with pytest.raises(StorageError, match="needs root"):
        nfs_mount(FakeRunner(mounts), path, euid=1000).unmounted()


def test_real_mount_table_lookup(tmp_path):
    # the real /proc/self/mountinfo: / is always a mount point, a fresh folder never is
    assert data_mount.mount_entry("/") is not None
    assert data_mount.mount_entry(str(tmp_path)) is None or os.path.ismount(str(tmp_path))
