"""Unit tests for plugins/module_utils/data_copy/remote.py: the parts that need no ssh (frames, the
checks of a side, the hash both hosts use, the host side's walk/seal/carry run in this process).
The sessions over ssh run in tests/integration/test_ssh_data_node.py."""

from __future__ import annotations

import io
import json
import os
import tempfile
import threading
import time

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import remote
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.seal import tree_seal
from ansible_collections.storage.mobility.plugins.module_utils.data_copy.walk import Walker, batches

SPEC = {"host": "storb", "address": "192.0.2.12", "port": 22, "user": "root", "key_file": "/root/.ssh/id_dn",
        "host_keys": ["mobility-storage-host ssh-ed25519 AAAAC3Nza"], "path": "/srv/pools/b/shares/s"}


def test_frames_carry_data_and_never_code():
    out = io.BytesIO()
    value = ("batch", [(b"a/b\xff", ("file", 0o644, 0, 0, 3, 123456789, None, None, ((u"user.x", b"1"),), None,
                                     "ab", None, None))])
    remote.write_frame(out, value)
    remote.write_frame(out, ("end", {"recorded": {b"f": ((1, 2, 3, 4), "h")}}))
    stream = io.BytesIO(out.getvalue())
    assert remote.read_frame(stream) == value
    assert remote.read_frame(stream)[1]["recorded"] == {b"f": ((1, 2, 3, 4), "h")}
    with pytest.raises(EOFError):
        remote.read_frame(stream)
    evil = b"__import__('os').system('true')"
    with pytest.raises(ValueError):
        remote.read_frame(io.BytesIO(str(len(evil)).encode() + b"\n" + evil))


@pytest.mark.parametrize("requested, used", [("xxh128", "blake2b"), ("blake3", "blake2b"), ("sha256", "sha256"),
                                             ("blake2b", "blake2b")])
def test_both_hosts_hash_with_the_standard_library(requested, used):
    algorithm, note = remote.hash_algorithm(requested)
    assert algorithm == used
    assert (note is None) == (requested == used)


@pytest.mark.parametrize("change, message", [
    ({"address": "-oProxyCommand=x"}, "is not a host name"),
    ({"address": "a,b"}, "is not a host name"),
    ({"user": "a b"}, "is not a login name"),
    ({"port": 0}, "is not 1-65535"),
    ({"key_file": "id"}, "must be an absolute path"),
    ({"key_file": "/k/%d"}, "must be an absolute path without"),
    ({"path": "relative"}, "is not absolute"),
    ({"host_keys": []}, "host_keys must list"),
    ({"host_keys": ["a\nb"]}, "host_keys must list"),
    ({"password": "x"}, "unknown keys password"),
])
def test_a_side_is_checked(change, message):
    with pytest.raises(ValueError, match=message):
        remote.check_spec(dict(SPEC, **change), "the destination side")


def test_the_session_argv_checks_the_host_key_strictly_and_quotes_the_loader(tmp_path):
    tree = remote.RemoteTree(dict(SPEC), str(tmp_path), "destination")
    argv = tree.argv()
    options = [argv[i + 1] for i, word in enumerate(argv) if word == "-o"]
    for wanted in ("BatchMode=yes", "StrictHostKeyChecking=yes", "HostKeyAlias=mobility-storage-host",
                   "GlobalKnownHostsFile=/dev/null", "IdentityFile=/root/.ssh/id_dn", "ForwardAgent=no",
                   "UserKnownHostsFile=%s" % tree.known_hosts):
        assert wanted in options
    assert argv[-3:-1] == ["--", "192.0.2.12"]
    assert argv[-1].startswith("python3 -c '")  # one word for the remote shell
    known = tmp_path / "known_hosts-destination"
    assert known.read_text() == "mobility-storage-host ssh-ed25519 AAAAC3Nza\n"
    assert oct(known.stat().st_mode & 0o777) == "0o600"


def test_the_bundle_holds_the_host_side_and_only_standard_library_imports():
    size, payload = remote.bundle().split(b"\n", 1)
    assert int(size) == len(payload)
    bundle = json.loads(payload)
    assert bundle["main"] == remote.PACKAGE + ".data_copy.remote"
    names = set(bundle["modules"])
    assert {remote.PACKAGE + ".data_copy." + name for name in ("walk", "fileread", "remote", "seal")} <= names
    for name, source in bundle["modules"].items():
        for line in source.splitlines():
            if line.startswith("from ansible_collections"):
                module = line.split()[1]
                assert module in names, (name, module)


def serve(request, frames=()):
    """Run the host side in this process: the request line and frames in, the frames it wrote out."""
    stdin = io.BytesIO()
    stdin.write(json.dumps(request).encode() + b"\n")
    for frame in frames:
        remote.write_frame(stdin, frame)
    stdin.seek(0)
    out = io.BytesIO()
    remote.serve(stdin, out)
    stream = io.BytesIO(out.getvalue())
    answers = []
    while True:
        try:
            answers.append(remote.read_frame(stream))
        except EOFError:
            return answers


def make_tree(root):
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("content")
    os.link(root / "d" / "f", root / "g")
    os.symlink("d/f", root / "s")
    os.setxattr(root / "d" / "f", "user.k", b"v")
    os.utime(root / "d" / "f", ns=(0, 1_600_000_000_123_456_789))
    os.utime(root / "s", ns=(0, 1_500_000_000_000_000_001), follow_symlinks=False)
    os.utime(root / "d", ns=(0, 1_400_000_000_000_000_002))


def test_the_host_side_walks_and_seals_as_a_local_walk(tmp_path):
    make_tree(tmp_path / "t")
    answers = serve({"op": "walk", "root": str(tmp_path / "t"), "ignore": [], "algorithm": "sha256",
                     "drop_cache": True, "skip_times": [], "cache": False})
    assert answers[-1][0] == "end"
    items = [item for kind, batch in answers[:-1] if kind == "batch" for item in batch]
    records = [item for kind, chunk in answers[:-1] if kind == "records" for item in chunk]
    local = Walker(str(tmp_path / "t"), (), "sha256")
    assert items == [(path, values) for path, values, error in local.walk()]
    # The records follow the batches: the hard-linked file under both its names, in the walk's order.
    assert [kind for kind, dummy in answers[:-1]] == ["batch", "records"]
    assert records == [(rel, ident, digest) for rel, (ident, digest) in sorted(local.recorded.items())]
    assert [rel for rel, ident, digest in records] == [b"d/f", b"g"]
    assert answers[-1][1]["digest"] == local.hexdigest()
    assert serve({"op": "seal", "root": str(tmp_path / "t"), "ignore": []}) == [("end", tree_seal(str(tmp_path / "t")))]


def test_a_failure_on_the_host_side_comes_back_as_a_frame(tmp_path):
    answers = serve({"op": "seal", "root": str(tmp_path / "missing"), "ignore": []})
    assert answers[0][0] == "failed" and "missing" in answers[0][1]


def test_carry_gives_the_destination_the_times_xattrs_and_hard_links_of_the_source(tmp_path):
    """What a copy through sshfs leaves (whole-second times, no xattr, the hard link as two files) is
    made equal to the source by the carry, as the manifests of both walks show."""
    source, destination = tmp_path / "src", tmp_path / "dst"
    make_tree(source)
    (destination / "d").mkdir(parents=True)
    (destination / "d" / "f").write_text("content")
    (destination / "g").write_text("content")  # a separate file, not a link
    os.symlink("d/f", destination / "s")
    for path in (destination / "d" / "f", destination / "g", destination / "d", destination):
        os.utime(path, ns=(0, 1_600_000_000_000_000_000))

    def manifest(root):
        return [(path, values[:10]) for path, values, error in Walker(str(root), (), None).walk()]

    walk = list(batches(Walker(str(source), (), None)))
    answers = serve({"op": "carry", "root": str(destination)}, [("batch", batch) for batch in walk] + [("end", None)])
    counts = answers[-1][1]
    assert counts["links"] == 1 and counts["xattrs"] >= 1 and counts["skipped"] == 0
    assert os.stat(destination / "g").st_ino == os.stat(destination / "d" / "f").st_ino
    assert os.getxattr(destination / "d" / "f", "user.k") == b"v"
    assert os.lstat(destination / "s").st_mtime_ns == 1_500_000_000_000_000_001
    assert manifest(destination) == manifest(source)
    # A second carry changes nothing.
    again = serve({"op": "carry", "root": str(destination)}, [("batch", batch) for batch in walk] + [("end", None)])
    assert again[-1][1]["links"] == 0 and again[-1][1]["times"] == 0 and again[-1][1]["xattrs"] == 0


class ServedHere(remote.RemoteTree):
    """A side walked as on its storage host: RemoteTree's own walk, its sessions served by the host
    side (remote.serve) in a thread of this process over two pipes instead of ssh."""

    def __init__(self, root, folder):
        super().__init__({"host": "here", "address": "127.0.0.1", "path": str(root), "host_keys": ["k"]},
                         str(folder), "destination")
        self.sessions = []

    def session(self, request):
        to_host, from_node = os.pipe()
        to_node, from_host = os.pipe()
        host_in, host_out = os.fdopen(to_host, "rb"), os.fdopen(from_host, "wb")

        def host():
            with host_in, host_out:
                remote.serve(host_in, host_out)

        thread = threading.Thread(target=host, daemon=True)
        thread.start()
        proc = FakeSession(os.fdopen(from_node, "wb"), os.fdopen(to_node, "rb"), thread)
        proc.stdin.write(json.dumps(request).encode() + b"\n")
        proc.stdin.flush()
        self.sessions.append(request)
        return proc


class FakeSession:
    """What RemoteTree uses of a Popen, for a host side served in a thread."""

    def __init__(self, stdin, stdout, thread):
        self.stdin, self.stdout, self.stderr, self.thread = stdin, stdout, io.BytesIO(), thread
        self.returncode = None

    def poll(self):
        return None if self.thread.is_alive() else 0

    def kill(self):
        self.stdin.close()

    def wait(self):
        self.thread.join()
        self.returncode = 0
        return 0


def test_a_side_walked_on_its_host_keeps_its_hashes_in_its_side_file_and_reuses_them(tmp_path):
    """The host side returns its records with its summary: the data node writes them as that side's
    file, and the next walk sends them back to the host, which reads no file again."""
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import compare as compare_lib
    from ansible_collections.storage.mobility.plugins.module_utils.data_copy import hashcache as hashcache_lib
    started = time.time() - 1
    for side in ("src", "dst"):
        make_tree(tmp_path / side)
        os.utime(tmp_path / side, ns=(0, 1_300_000_000_000_000_003))
    base = str(tmp_path / "hashes")
    first = compare_lib.compare_trees(str(tmp_path / "src"), str(tmp_path / "dst"), algorithm="sha256",
                                      remote={"destination": ServedHere(tmp_path / "dst", tmp_path)}, record_to=base)
    assert first.matched, first.summary()
    assert first.files_hashed == 2  # d/f on each side; g is its hard link
    kept = hashcache_lib.load_side(base + ".destination", "sha256", "destination")
    source = hashcache_lib.load_side(base + ".source", "sha256", "source")
    assert sorted(kept) == sorted(source) == [b"d/f", b"g"]
    assert kept[b"g"][1] == source[b"g"][1] and kept[b"g"][0][3] == os.stat(tmp_path / "dst" / "g").st_ino
    first.cache.save(str(tmp_path / "kept"))
    host = ServedHere(tmp_path / "dst", tmp_path)
    again = compare_lib.compare_trees(str(tmp_path / "src"), str(tmp_path / "dst"), algorithm="sha256",
                                      remote={"destination": host},
                                      cache=hashcache_lib.HashCache.load(str(tmp_path / "kept"), "sha256"),
                                      record_to=base)
    assert again.matched and again.files_hashed == 0 and again.files_reused == 2
    assert host.sessions[0]["cache"] is True
    # The host kept the records in a temporary folder of its own while it walked, and removed it.
    assert not [name for name in os.listdir(tempfile.gettempdir()) if name.startswith("mobility-walk-")
                and os.stat(os.path.join(tempfile.gettempdir(), name)).st_mtime > started]
