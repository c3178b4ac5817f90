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
    assert sorted(made["argument_spec"]) == ["backends", "pool"]
