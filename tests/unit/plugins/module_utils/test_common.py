"""Unit tests for plugins/module_utils/common.py: run_module's one error vocabulary and the run's waits."""

from __future__ import annotations

import pytest

from mobility_helpers import backend_spec

from ansible_collections.storage.mobility.plugins.module_utils import common
from ansible_collections.storage.mobility.plugins.module_utils.common import run_module
from ansible_collections.storage.mobility.plugins.module_utils.errors import InvalidRequest, NotFound, WaitTimeout


class Exit(Exception):
    pass


class FakeModule:
    """What run_module uses of AnsibleModule."""

    def __init__(self, params, check_mode=False):
        self.params = params
        self.check_mode = check_mode
        self._diff = False
        self.warnings = []

    def run_command(self, args, **kwargs):
        raise AssertionError("no command expected")

    def warn(self, message):
        self.warnings.append(message)

    def fail_json(self, **result):
        raise Exit("fail", result)

    def exit_json(self, **result):
        raise Exit("exit", result)


def run(module, action):
    with pytest.raises(Exit) as info:
        run_module(module, action)
    return info.value.args


@pytest.fixture
def params(tmp_path):
    return {"backends": [backend_spec(tmp_path / "pools")], "wait": True, "wait_timeout": 30, "wait_sleep": 1}


def test_the_action_gets_the_module_params(params):
    outcome, result = run(FakeModule(params), lambda ctx, p: {"changed": False, "timeout": p["wait_timeout"]})
    assert (outcome, result) == ("exit", {"changed": False, "timeout": 30})


def test_the_context_carries_the_wait_options_and_check_mode_never_waits(params):
    seen = []
    run(FakeModule(params), lambda ctx, p: seen.append(tuple(ctx.waits)) or {"changed": False})
    run(FakeModule(params, check_mode=True), lambda ctx, p: seen.append(tuple(ctx.waits)) or {"changed": False})
    assert seen == [(True, 30, 1), (False, 30, 1)]


@pytest.mark.parametrize("error, error_type", [
    (InvalidRequest("bad"), "invalid_request"), (NotFound("gone"), "not_found"),
    (WaitTimeout("slow", result={"name": "s1"}), "timeout"),
])
def test_errors_report_the_type_their_class_carries(params, error, error_type):
    def action(ctx, params):
        raise error
    outcome, result = run(FakeModule(params), action)
    assert outcome == "fail" and result["msg"] == error.message and result["error_type"] == error_type


def test_a_refined_error_reports_the_type_of_the_class_it_refines(params):
    class Refined(InvalidRequest):
        pass

    def action(ctx, params):
        raise Refined("refused")
    outcome, result = run(FakeModule(params), action)
    # before each class carried its type, a subclass fell through to 'storage'
    assert (outcome, result["error_type"]) == ("fail", "invalid_request")


def test_a_wait_timeout_returns_the_partial_share(params):
    def action(ctx, params):
        raise WaitTimeout("slow", result={"name": "s1"})
    outcome, result = run(FakeModule(params), action)
    assert result["share"] == {"name": "s1"} and "result" not in result


def test_mobility_module_builds_the_argument_spec_every_module_shares(monkeypatch):
    made = {}
    monkeypatch.setattr(common, "AnsibleModule", lambda **kwargs: made.update(kwargs) or "module")
    assert common.mobility_module(dict(name=dict(type="str")), wait=True, states=("started", "completed"),
                                  required_if=[("state", "started", ["name"])]) == "module"
    spec = made.pop("argument_spec")
    assert made == {"supports_check_mode": True, "required_if": [("state", "started", ["name"])]}
    assert spec["state"] == {"type": "str", "choices": ["started", "completed"], "default": "started"}
    assert spec["wait_timeout"] == {"type": "int", "default": 3600} and spec["name"] == {"type": "str"}
    assert spec["backends"]["required"] is True
    common.mobility_module(dict(pool=dict(type="str")))
    assert sorted(made["argument_spec"]) == ["backends", "events", "pool"]
    assert made["argument_spec"]["events"]["options"]["webhook_url"]["fallback"][1] == ["MOBILITY_EVENTS_WEBHOOK"]


def test_the_events_option_sends_the_runs_lines_and_writes_its_metrics(params, tmp_path):
    import http.server
    import json
    import os
    import threading

    from ansible_collections.storage.mobility.plugins.module_utils import events
    from ansible_collections.storage.mobility.plugins.module_utils.managers.share import ShareManager

    bodies = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    folder = tmp_path / "textfiles"
    folder.mkdir()
    params["events"] = {"webhook_url": "http://127.0.0.1:%d/" % server.server_address[1], "webhook_timeout": 2.0,
                        "webhook_retries": 1, "webhook_validate_certs": True, "metrics_dir": str(folder)}

    def create(ctx, p):
        ShareManager(ctx).present("s1", "localhost@be1#a", 1, "NFS", None, None, [])
        return {"changed": True}
    try:
        module = FakeModule(params)
        assert run(module, create)[0] == "exit"
        assert module.warnings == []
        assert [b["new"] for b in bodies if b["field"] == "status"][-1] == "available"
        assert "storage_mobility_share_info{" in (folder / "storage_mobility_localhost_be1_a.prom").read_text()
        # Check mode writes no record, so no line and no file.
        assert sorted(os.listdir(folder)) == ["storage_mobility_localhost_be1_a.prom", "storage_mobility_localhost_be1_b.prom"]
        for name in os.listdir(folder):
            os.unlink(folder / name)
        sent = len(bodies)
        run(FakeModule(params, check_mode=True), lambda ctx, p: {"changed": False})
        assert os.listdir(folder) == [] and len(bodies) == sent
        # A bad option is refused before anything runs, naming the option.
        params["events"]["webhook_url"] = "ftp://127.0.0.1/x"
        outcome, result = run(FakeModule(params), lambda ctx, p: pytest.fail("the action ran"))
        assert outcome == "fail" and "events.webhook_url" in result["msg"] and result["error_type"] == "invalid_request"
    finally:
        events.configure_webhook(None)
        server.shutdown()
        server.server_close()


def test_a_metrics_folder_that_is_missing_is_a_warning_not_a_failure(params, tmp_path):
    params["events"] = {"webhook_url": None, "metrics_dir": str(tmp_path / "missing")}
    module = FakeModule(params)
    outcome, result = run(module, lambda ctx, p: {"changed": False})
    assert outcome == "exit" and module.warnings and all("was not written" in w for w in module.warnings)
