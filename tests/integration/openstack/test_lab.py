"""The lab harness itself (lab.py), without starting OpenStack: pid files, stop, configuration, the venv cache.

The lab as a whole is exercised by every test of this folder; these tests pin down the parts that
keep a machine clean (stop ends exactly what start started) and fast (cached environments).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lab


def test_stop_ends_every_recorded_process_group_and_only_those(tmp_path):
    (tmp_path / "logs").mkdir()
    # a "service" with a child of its own, as the OpenStack services have workers
    service = lab.spawn(tmp_path, "manila-share", [sys.executable, "-c",
                                                   "import subprocess, time; subprocess.Popen(['sleep', '300']); "
                                                   "time.sleep(300)"])
    bystander = subprocess.Popen(["sleep", "300"])  # pylint: disable=consider-using-with
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(_group(service.pid)) < 2:
            time.sleep(0.1)
        assert len(_group(service.pid)) == 2
        assert lab.status(tmp_path)["processes"]["manila-share"] == service.pid
        assert lab.stop(tmp_path, quiet=True) == ["manila-share"]
        service.wait(timeout=10)
        assert _group(service.pid) == []
        assert bystander.poll() is None, "stop killed a process the lab did not start"
        assert not (tmp_path / "pids" / "manila-share.pid").exists()
        assert lab.stop(tmp_path, quiet=True) == []
    finally:
        bystander.kill()
        bystander.wait()


def _group(pgid: int) -> list:
    members = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path("/proc/%s/stat" % name).read_bytes()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                members.append(int(name))
    return members


def test_a_pid_file_of_another_process_is_ignored(tmp_path):
    lab.record_pid(tmp_path, "mariadb", os.getpid())
    assert lab.recorded_pid(tmp_path, "mariadb") == os.getpid()
    pid, _started = (tmp_path / "pids" / "mariadb.pid").read_text().split()
    (tmp_path / "pids" / "mariadb.pid").write_text("%s 1\n" % pid)  # same pid, another start time: reused
    assert lab.recorded_pid(tmp_path, "mariadb") is None


def test_lab_file_without_the_optional_fields(tmp_path):
    data = {"base": "/b", "clouds_yaml": "/b/clouds.yaml", "cloud": "c", "manila_endpoint": "http://m/",
            "cinder_endpoint": "http://c/", "project_id": "p", "manila_pools": ["h@a#p"], "cinder_pools": ["h@b#p"]}
    (tmp_path / "lab.json").write_text(json.dumps(data))
    loaded = lab.Lab.from_file(tmp_path / "lab.json")
    assert loaded.cinder_pools == ["h@b#p"] and loaded.cinder_volume_dirs == {}


def test_configuration_files(tmp_path):
    venv = tmp_path / "venv"
    for service, names in (("manila", ["api-paste.ini"]), ("cinder", ["api-paste.ini", "resource_filters.json"])):
        (venv / "etc" / service).mkdir(parents=True)
        for name in names:
            (venv / "etc" / service / name).write_text("[x]\npath = /etc/manila/healthcheck_disable\n")
    manila = lab.write_manila_conf(tmp_path, venv).read_text()
    cinder = lab.write_cinder_conf(tmp_path, venv).read_text()
    assert "osapi_share_listen_port = %d" % lab.PORTS["manila"] in manila
    assert "enabled_share_backends = alpha,beta,gamma" in manila
    assert manila.count("replication_domain = %s" % lab.REPLICATION_DOMAIN) == 3
    assert "127.0.0.1:%d/manila" % lab.PORTS["mysql"] in manila and ":%d/" % lab.PORTS["amqp"] in manila
    assert str(tmp_path / "manila" / "etc" / "healthcheck_disable") in (tmp_path / "manila" / "etc" / "api-paste.ini").read_text()
    assert "osapi_volume_listen_port = %d" % lab.PORTS["cinder"] in cinder
    assert "enabled_backends = file1,file2" in cinder
    assert cinder.count("volume_driver = cinder_test_drivers.file_volume.MovingFileVolumeDriver") == 2
    assert "helper_command = %s" % (venv / "bin" / "privsep-helper") in cinder
    assert (tmp_path / "cinder" / "volumes" / "file1").is_dir()
    for service in ("manila", "cinder"):
        assert "lab_discovery:filter_factory" in (tmp_path / service / "etc" / "api-paste.ini").read_text()


def test_noauth_pipelines_get_the_discovery_filter_before_noauth():
    paste = ("[composite:api]\nuse = call:x\nnoauth = cors faultwrap noauth apiv3\n"
             "noauthv2 = cors noauthv2 apiv2\nkeystone = cors authtoken keystonecontext apiv3\n")
    written = lab.with_discovery(paste)
    assert "noauth = cors faultwrap lab_discovery noauth apiv3" in written
    assert "noauthv2 = cors lab_discovery noauthv2 apiv2" in written
    assert "keystone = cors authtoken keystonecontext apiv3" in written
    assert "[filter:lab_discovery]\npaste.filter_factory = lab_discovery:filter_factory" in written


def test_the_discovery_filter_gives_a_token_only_to_an_anonymous_get_of_the_root():
    import lab_discovery

    seen = []
    app = lab_discovery.filter_factory({})(lambda environ, start_response: seen.append(environ.get("HTTP_X_AUTH_TOKEN")))
    app({"REQUEST_METHOD": "GET", "PATH_INFO": "/"}, None)
    app({"REQUEST_METHOD": "GET", "PATH_INFO": "/volumes"}, None)
    app({"REQUEST_METHOD": "DELETE", "PATH_INFO": "/"}, None)
    app({"REQUEST_METHOD": "GET", "PATH_INFO": "", "HTTP_X_AUTH_TOKEN": "u:p"}, None)
    assert seen == ["admin:admin", None, None, "u:p"]


def test_busy_ports_are_refused_with_their_names(tmp_path, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        monkeypatch.setattr(lab, "PORTS", {"mysql": port})
        with pytest.raises(lab.LabError) as info:
            lab._check_ports(tmp_path)  # pylint: disable=protected-access
    assert "mysql %d" % port in str(info.value)


def test_pins_are_split_for_parallel_pips_without_splitting_a_family():
    pins = ["Paste==3", "PasteDeploy==3", "alembic==1", "amqp==5", "attrs==26", "cachetools==8", "zstd==1"]
    chunks = lab.pin_chunks(pins, 3)
    assert sorted(p for chunk in chunks for p in chunk) == sorted(pins)
    assert [c for c in chunks if "Paste==3" in c] == [c for c in chunks if "PasteDeploy==3" in c]
    assert len(chunks) >= 2


def test_environments_are_cached_by_the_hash_of_their_pins(tmp_path, monkeypatch):
    requirements = tmp_path / "requirements-cinder.txt"
    requirements.write_text("cinder==1\n")
    monkeypatch.setattr(lab, "REQUIREMENTS", {"cinder": requirements})
    monkeypatch.setenv("MOBILITY_LAB_CACHE", str(tmp_path / "cache"))
    commands = []

    def fake_run(argv, log_file, what, **kwargs):
        commands.append([str(a) for a in argv])
        if "venv" in commands[-1]:
            Path(commands[-1][-1]).mkdir(parents=True)
        return ""

    monkeypatch.setattr(lab, "run", fake_run)
    monkeypatch.setattr(lab, "install_pins", lambda pip, pins, logs, name: commands.append(["install", str(pins)]))
    (tmp_path / "logs").mkdir()
    log = lab.Log(None, echo=False)
    first = lab.ensure_venv("cinder", log, tmp_path / "logs")
    assert [c[0] for c in commands[1:]] == ["install", str(first / "bin" / "pip")]
    assert commands[1][-1] == str(requirements) and commands[2][-1] == "check"
    assert lab.ensure_venv("cinder", log, tmp_path / "logs") == first and len(commands) == 3
    requirements.write_text("cinder==2\n")
    second = lab.ensure_venv("cinder", log, tmp_path / "logs")
    assert second != first and len(commands) == 6
