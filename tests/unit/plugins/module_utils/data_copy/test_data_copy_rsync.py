"""rsync argv building, literal excludes and progress parsing (plugins/module_utils/data_copy/rsync.py).

Against the real rsync: the excludes really skip exactly the named entries at any depth, the
progress parser reads what rsync really prints, and --modify-window=-1 really copies a same-size
change made within the same second (rsync's default compares whole seconds and skips it).
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ansible_collections.storage.mobility.plugins.module_utils.data_copy import rsync as rsync_lib

pytestmark = pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")

# Captured from `rsync -aHAXS ... --info=progress2,stats2 --bwlimit=2m src/ dst/`
# (rsync 3.5.0, LC_ALL=C): progress lines separated by carriage returns, then the statistics.
CAPTURED = (
    b"\r              3   0%    0.00kB/s    0:00:00  "
    b"\r              3   0%    0.00kB/s    0:00:00 (xfr#1, to-chk=4/6)"
    b"\r      2,326,531  25%    2.03MB/s    0:00:03  "
    b"\r      3,000,003  33%    2.18MB/s    0:00:01 (xfr#2, to-chk=2/6)"
    b"\r      4,638,403  51%    2.02MB/s    0:00:02  "
    b"\r      6,000,003  66%    2.09MB/s    0:00:02 (xfr#3, to-chk=1/6)"
    b"\r      6,950,275  77%    2.01MB/s    0:00:00  "
    b"\r      9,000,003 100%    2.06MB/s    0:00:04 (xfr#4, to-chk=0/6)"
    b"\r      9,000,003 100%    2.00MB/s    0:00:04 (xfr#4, to-chk=0/6)\n"
    b"\n"
    b"Number of files: 6 (reg: 4, dir: 2)\n"
    b"Number of created files: 6 (reg: 4, dir: 2)\n"
    b"Number of deleted files: 0\n"
    b"Number of regular files transferred: 4\n"
    b"Total file size: 9,000,003 bytes\n"
    b"Total transferred file size: 9,000,003 bytes\n"
    b"Literal data: 9,000,003 bytes\n"
    b"Matched data: 0 bytes\n"
    b"File list size: 0\n"
    b"File list generation time: 0.001 seconds\n"
    b"File list transfer time: 0.000 seconds\n"
    b"Total bytes sent: 9,002,498\n"
    b"Total bytes received: 105\n"
    b"\n"
    b"sent 9,002,498 bytes  received 105 bytes  2,000,578.44 bytes/sec\n"
    b"total size is 9,000,003  speedup is 1.00\n"
)


# --------------------------------------------------------------------------- argv


@pytest.mark.parametrize(
    "name, pattern",
    [
        ("lost+found", "lost+found"),
        ("plain name", "plain name"),
        ("back\\slash", "back\\slash"),  # no wildcard: rsync reads the backslash literally
        ("a*b", "a\\*b"),
        ("q?", "q\\?"),
        ("[ab]", "\\[ab]"),
        ("*\\x", "\\*\\\\x"),  # with a wildcard, the backslash is escaped too
    ],
)
def test_escape_pattern(name, pattern):
    assert rsync_lib.escape_pattern(name) == pattern


def test_exclude_argument_uses_filter_for_names_rsync_reads_as_rules():
    assert rsync_lib.exclude_argument("lost+found") == "--exclude=lost+found"
    assert rsync_lib.exclude_argument("*.tmp") == "--exclude=\\*.tmp"
    assert rsync_lib.exclude_argument("!") == "--filter=- !"
    assert rsync_lib.exclude_argument("- x") == "--filter=- - x"
    assert rsync_lib.exclude_argument("+ y") == "--filter=- + y"


@pytest.mark.parametrize("bad", ["", "a/b", "nul\x00", ".", ".."])
def test_ignored_names_must_be_single_names(bad):
    with pytest.raises(rsync_lib.RsyncArgumentError):
        rsync_lib.exclude_argument(bad)


def test_build_argv_defaults_and_order():
    argv = rsync_lib.build_argv("/mnt/src", "/mnt/dst/", ["lost+found", "a*b"], extra_options=["--no-whole-file"],
                                bwlimit="10m")
    assert argv == [
        "rsync", "-aHAXS", "--numeric-ids", "--partial", "--delete", "--info=progress2,stats2",
        "--modify-window=-1", "--filter=-x trusted.SGI_ACL_FILE",
        "--filter=-x trusted.SGI_ACL_DEFAULT", "--filter=-x system.posix_acl_access",
        "--filter=-x system.posix_acl_default", "--exclude=lost+found", "--exclude=a\\*b", "--bwlimit=10m",
        "--no-whole-file", "--", "/mnt/src/", "/mnt/dst/",
    ]


def test_build_argv_base_options_replace_the_defaults():
    argv = rsync_lib.build_argv("/a", "/b", [], base_options=["-rt"])
    assert argv == ["rsync", "-rt", "--", "/a/", "/b/"]


@pytest.mark.parametrize("options, bwlimit", [(["no-dash"], None), (["--x\x00"], None), ([], "10m; rm -rf /")])
def test_build_argv_refuses_bad_options(options, bwlimit):
    with pytest.raises(rsync_lib.RsyncArgumentError):
        rsync_lib.build_argv("/a", "/b", [], extra_options=options, bwlimit=bwlimit)


def test_options_say():
    assert rsync_lib.options_say(["-aO"], "O", "--omit-dir-times")
    assert rsync_lib.options_say(["--omit-dir-times"], "O", "--omit-dir-times")
    assert not rsync_lib.options_say(["-aHAXS", "--modify-window=-1"], "O", "--omit-dir-times")


def _touch(path: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(b"x")


def test_excludes_are_literal_at_any_depth_with_real_rsync(tmp_path):
    ignored = ["lost+found", "a*b", "q?", "[ab]", "back\\slash", "!", "- x", "+ y", "sp ace ", "new\nline"]
    kept = ["aXb", "qq", "a", "b", "backXslash", "x", "y", "sp ace", "keep"]
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    for folder in (src, src / "sub", src / "sub" / "deeper"):
        for name in ignored + kept:
            _touch(os.path.join(os.fsencode(folder), name.encode()))
    dst = tmp_path / "dst"
    dst.mkdir()
    argv = rsync_lib.build_argv(str(src), str(dst), ignored)
    proc = subprocess.run(argv, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for folder in ("", "sub", "sub/deeper"):
        names = set(os.listdir(dst / folder)) - {"sub", "deeper"}
        assert names == set(kept), folder


# --------------------------------------------------------------------------- progress


def test_parse_progress_line():
    line = "  1,234,567  45%   12.34MB/s    0:00:10 (xfr#12, to-chk=34/100)"
    parsed = rsync_lib.parse_progress_line(line)
    assert parsed == {"bytes_done": 1234567, "percent": 45, "rate_bytes_per_s": int(12.34 * 1024 * 1024),
                      "time_seconds": 10, "end_of_file": True, "xfr": 12, "to_check": 34, "entries_total": 100}
    mid = rsync_lib.parse_progress_line("      2,326,531  25%    2.03MB/s    1:02:03  ")
    assert mid["time_seconds"] == 3723 and not mid["end_of_file"] and "entries_total" not in mid
    assert rsync_lib.parse_progress_line("  100  1%  0.00kB/s  ??:??:??")["time_seconds"] is None
    assert rsync_lib.parse_progress_line("Number of files: 6 (reg: 4, dir: 2)") is None
    assert rsync_lib.parse_progress_line("rsync: [sender] send_files failed to open") is None


def test_progress_reader_on_captured_output():
    logged = []
    reader = rsync_lib.ProgressReader(on_line=logged.append)
    # Feed in awkward pieces: lines split across reads must still parse.
    for start in range(0, len(CAPTURED), 7):
        reader.feed(CAPTURED[start:start + 7])
    reader.close()
    assert reader.latest["bytes_done"] == 9000003
    assert reader.latest["percent"] == 100
    assert reader.entries_total == 6 and reader.to_check == 0
    assert logged[0] == "Number of files: 6 (reg: 4, dir: 2)"
    stats = rsync_lib.parse_stats(reader.lines)
    assert stats == {"files": 6, "created": 6, "deleted": 0, "transferred": 4, "total_size": 9000003,
                     "transferred_size": 9000003, "literal_data": 9000003, "matched_data": 0}


def test_progress_reader_on_live_rsync_output(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for index in range(3):
        (src / "d" / ("f%d" % index)).write_bytes(os.urandom(300000))
    dst = tmp_path / "dst"
    argv = rsync_lib.build_argv(str(src), str(dst), bwlimit="2m")
    proc = subprocess.run(argv, capture_output=True, check=False, env=dict(os.environ, LC_ALL="C"))
    assert proc.returncode == 0, proc.stderr
    assert b"\r" in proc.stdout
    reader = rsync_lib.ProgressReader()
    reader.feed(proc.stdout)
    reader.close()
    assert reader.latest["bytes_done"] == 900000
    assert reader.latest["percent"] == 100
    assert reader.entries_total == 5  # ., d, and three files
    assert reader.to_check == 0
    assert rsync_lib.parse_stats(reader.lines)["transferred"] == 3


def test_entries_checked_keep_their_highest_value():
    """Captured from rsync 3.x recursing incrementally (40 folders of 30 files): M - N of
    ir-chk=N/M steps back by a few entries while rsync lists, and M grows; the entries checked
    that the status shows never go back."""
    lines = [
        b"\r         20,000   4%    0.00kB/s    0:00:00 (xfr#1, to-chk=23/31)",
        b"\r         20,000   4%    0.00kB/s    0:00:00 (xfr#1, to-chk=20/31)",
        b"\r         40,000   8%   19.07MB/s    0:00:00 (xfr#2, to-chk=22/31)",
        b"\r            312   5%  300.78kB/s    0:00:00 (xfr#60, ir-chk=1020/1121)",
        b"\r            654  10%  317.38kB/s    0:00:00 (xfr#120, ir-chk=1020/1181)",
        b"\r          1,338  20%  434.24kB/s    0:00:00 (xfr#240, to-chk=960/1241)\n",
    ]
    reader = rsync_lib.ProgressReader()
    seen = []
    for line in lines:
        reader.feed(line)
        seen.append(reader.checked)
    assert seen == [8, 11, 11, 101, 161, 281]
    assert (reader.entries_total, reader.to_check) == (1241, 960)


def test_incremental_recursion_progress_on_live_rsync_output(tmp_path):
    """The default options let rsync recurse incrementally (ir-chk lines, a list that grows) and
    the entries checked climb to every entry of the tree without going back."""
    src = tmp_path / "src"
    for folder in range(40):
        (src / ("d%02d" % folder)).mkdir(parents=True)
        for name in range(30):
            (src / ("d%02d" % folder) / ("f%02d" % name)).write_text("%d %d\n" % (folder, name))
    argv = rsync_lib.build_argv(str(src), str(tmp_path / "dst"))
    proc = subprocess.run(argv, capture_output=True, check=False, env=dict(os.environ, LC_ALL="C"))
    assert proc.returncode == 0, proc.stderr
    assert b"ir-chk=" in proc.stdout, "rsync listed the whole tree before copying"
    reader = rsync_lib.ProgressReader()
    seen = []
    for start in range(0, len(proc.stdout), 4096):
        reader.feed(proc.stdout[start:start + 4096])
        seen.append(reader.checked)
    reader.close()
    assert seen == sorted(seen)
    assert reader.checked == reader.entries_total == 40 * 30 + 40 + 1  # files, folders and the top


def test_describe_exit():
    assert rsync_lib.describe_exit(24) == "partial transfer due to vanished source files"
    assert rsync_lib.describe_exit(-9) == "killed by signal 9"
    assert rsync_lib.describe_exit(99) == "exit code 99"


# --------------------------------------------------------------------------- --modify-window=-1


def _same_second_change(tmp_path, base_options):
    """Copy a file, change it (same size) within the same second, copy again; return the destination bytes."""
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    src.mkdir()
    target = src / "f"
    second = 1700000000 * 10**9
    target.write_bytes(b"AAAA")
    os.utime(target, ns=(second + 100, second + 100))
    argv = rsync_lib.build_argv(str(src), str(dst), base_options=base_options)
    subprocess.run(argv, capture_output=True, check=True)
    target.write_bytes(b"BBBB")
    os.utime(target, ns=(second + 900, second + 900))
    subprocess.run(argv, capture_output=True, check=True)
    return (dst / "f").read_bytes(), os.stat(dst / "f").st_mtime_ns


def test_modify_window_minus_one_copies_a_same_second_same_size_change(tmp_path):
    content, mtime_ns = _same_second_change(tmp_path, None)
    assert content == b"BBBB"
    assert mtime_ns == 1700000000 * 10**9 + 900


def test_without_modify_window_rsync_misses_that_change(tmp_path):
    """The control: rsync's default compares whole seconds and keeps the stale copy."""
    base = [option for option in rsync_lib.DEFAULT_BASE_OPTIONS if not option.startswith("--modify-window")]
    content, dummy = _same_second_change(tmp_path, base)
    assert content == b"AAAA"
