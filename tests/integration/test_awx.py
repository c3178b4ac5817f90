"""Jobs as AWX runs them: the phase playbooks through ansible-runner, and the job templates an
operator imports.

ansible-runner is what AWX's job containers run: a private data directory (``env/extravars``,
``env/envvars``, ``inventory/``, ``project/``), the playbook of a project, the event stream (every
event handed to a callback as it happens and kept in ``artifacts/<ident>/job_events/``), and a cancel
(AWX's cancel button) that kills the job's process group. The project here is the one the collection
ships for AWX (``awx/project/``, playbooks that import the collection's), run against the host
migration lab (two pools of this machine, localhost as the data node; tests/integration/hostmig_lab.py).

The job templates and surveys (``awx/job_templates.json``) are checked against the playbooks they
run: every question is a variable the playbook reads, with the same type and default.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from hostmig_lab import BETA, Lab, alive, job_state_dir, opened_lab, processes_naming, read_json, tree_tool, wait_until
from test_targets import REPO_ROOT, _environment

ansible_runner = pytest.importorskip("ansible_runner", reason="ansible-runner is in requirements-dev.txt (scripts/setup.sh)")

AWX_DIR = REPO_ROOT / "awx"
PROGRESS_TASK = "Show the progress of copy job"
JOB_ID = "4711"  # AWX sets JOB_ID in a job's environment; the journal's run_id is awx-<JOB_ID>


# ------------------------------------------------------------------------------------------ the runner


class Job:
    """One ansible-runner job in a fresh private data directory, as AWX lays it out."""

    def __init__(self, lab: Lab, playbook: str, extravars: dict, envvars: dict | None = None, cancel_when=None):
        self.lab = lab
        self.events: list[tuple[float, dict]] = []
        lab._runs += 1
        self.private = lab.work / f"runner{lab._runs:02d}"
        (self.private / "env").mkdir(parents=True)
        (self.private / "inventory").mkdir()
        shutil.copytree(AWX_DIR / "project", self.private / "project")
        shutil.copy(lab.inventory, self.private / "inventory" / "hosts.yml")
        (self.private / "env" / "extravars").write_text(json.dumps(extravars), encoding="utf-8")
        environment = _environment(lab.collections, lab.work)
        wanted = dict((k, v) for k, v in environment.items() if k.startswith("ANSIBLE_") and k != "ANSIBLE_CALLBACK_RESULT_FORMAT")
        wanted.update({"PYTHONUNBUFFERED": "1", "JOB_ID": JOB_ID}, **(envvars or {}))
        (self.private / "env" / "envvars").write_text(json.dumps(wanted), encoding="utf-8")
        # How often the runner looks at the cancel callback while the playbook prints nothing.
        (self.private / "env" / "settings").write_text(json.dumps({"pexpect_timeout": 1}), encoding="utf-8")
        self.started = time.monotonic()
        self.ended: float | None = None
        self.cancel_when = cancel_when
        self.thread, self.runner = ansible_runner.run_async(
            private_data_dir=str(self.private), playbook=playbook, ident="job", quiet=True,
            event_handler=self._event, cancel_callback=self._cancel, finished_callback=self._finished)

    def _event(self, event: dict) -> bool:
        self.events.append((time.monotonic(), event))
        return True  # keep it in artifacts/job/job_events too, as AWX does

    def _cancel(self) -> bool:
        return bool(self.cancel_when and self.cancel_when(self))

    def _finished(self, runner) -> None:
        self.ended = time.monotonic()

    def wait(self, timeout: float = 600) -> "Job":
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the job did not end within {timeout} s"
        return self

    @property
    def artifacts(self) -> Path:
        return self.private / "artifacts" / "job"

    def stdout(self) -> str:
        return (self.artifacts / "stdout").read_text(encoding="utf-8", errors="replace")

    def progress_events(self) -> list[tuple[float, dict]]:
        return [(at, e) for at, e in self.events
                if e.get("event") == "runner_on_ok" and e.get("event_data", {}).get("task", "").startswith(PROGRESS_TASK)]

    def ok(self) -> None:
        assert self.runner.status == "successful" and self.runner.rc == 0, \
            f"job {self.runner.status} (rc {self.runner.rc}):\n{self.stdout()[-6000:]}"


def percent_of(event: dict) -> int | None:
    """The percentage of a progress line; None while the source is still being counted (the line
    then says so and shows no percentage: docs/data_mover.md, Progress), 100 for the closing line."""
    message = event["event_data"]["res"]["msg"]
    if "still counting" in message:
        assert "%" not in message, message
        return None
    if message.startswith("completed:"):  # the last line: each phase's own time and rate
        return 100
    found = re.search(r"(\d+(?:\.\d+)?)\s*%", message)
    assert found, f"no percentage in the progress line {message!r}"
    return int(float(found.group(1)))


class Receiver:
    """A webhook on 127.0.0.1 that keeps the journal lines POSTed to it."""

    def __init__(self):
        self.lines: list[dict] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.lines.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/events" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lab(tmp_path, collections_path):
    with opened_lab(tmp_path, collections_path) as the_lab:
        yield the_lab


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def migrate_vars(lab: Lab, share: str, rate: str = "2m", **extra) -> dict:
    # A slow copy (rsync --bwlimit) so that the job runs long enough to see it progress.
    return lab.migrate_vars(share, data_mover_rsync_options=["--bwlimit=" + rate], **extra)


# ------------------------------------------------------------------------------------------ jobs


def test_a_copy_run_through_ansible_runner_streams_its_progress_as_events(lab, receiver, tmp_path):
    lab.create_shares("streamed")
    # About 24 s of copying: a loaded machine spends seconds on each poll of the copy, and the
    # test wants at least three of them while the copy runs.
    before = lab.fill_plain("streamed", big_mb=24)
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    job = Job(lab, "migrate_share.yml", migrate_vars(lab, "streamed", rate="1m"),
              envvars={"MOBILITY_EVENTS_WEBHOOK": receiver.url, "MOBILITY_METRICS_DIR": str(textfiles)})
    job.wait()
    job.ok()
    lab.shares.add("streamed")

    # Progress lines are events, and they arrived while the job ran, not in a burst at its end.
    progress = job.progress_events()
    assert len(progress) >= 3, [e.get("event_data", {}).get("task") for _at, e in job.events]
    first_at = progress[0][0]
    assert job.ended - first_at >= 4, "the first progress event came only %.1f s before the job ended" % (job.ended - first_at)
    arrivals = [at for at, _event in progress]
    # One by one as the job ran (a burst at the end arrives within milliseconds), over seconds. No
    # bound on the gaps: each poll is a module call whose time follows the machine's load.
    assert min(b - a for a, b in zip(arrivals, arrivals[1:])) > 0.2 and arrivals[-1] - arrivals[0] >= 4, arrivals
    percents = [p for p in (percent_of(e) for _at, e in progress) if p is not None]
    assert percents and percents == sorted(percents) and percents[0] < 100 and percents[-1] == 100, percents
    assert all(e["event_data"]["host"] == "localhost" for _at, e in progress)

    # The artifacts hold the same stream, the stdout, the status and the rc, as AWX keeps them.
    stored = sorted((json.loads(p.read_text()) for p in (job.artifacts / "job_events").glob("*.json")), key=lambda e: e["counter"])
    assert sorted(e["uuid"] for e in stored) == sorted(e["uuid"] for _at, e in job.events)
    assert [e["uuid"] for e in stored if e["event"] == "runner_on_ok"
            and e["event_data"].get("task", "").startswith(PROGRESS_TASK)] == [e["uuid"] for _at, e in progress]
    assert (job.artifacts / "status").read_text() == "successful" and (job.artifacts / "rc").read_text() == "0"
    assert PROGRESS_TASK in job.stdout() and "data_copying_completed" in job.stdout()

    record = lab.record("streamed")
    assert record["task_state"] == "data_copying_completed"
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("streamed", "beta"))))["equal"]
    # The environment AWX gives a job reached the modules: the journal's lines carry the job's id,
    # the webhook got them as they were written, the metrics files follow the record.
    journal = [json.loads(line) for line in (lab.pools["alpha"] / ".mobility" / "events.jsonl").read_text().splitlines()]
    ours = [line for line in journal if line["name"] == "streamed" and line["run_id"] == "awx-" + JOB_ID]
    assert [line["new"] for line in ours if line["field"] == "task_state"][-1] == "data_copying_completed"
    assert sorted(receiver.lines, key=json.dumps) == sorted(ours, key=json.dumps)
    metrics = (textfiles / "storage_mobility_stor1_generic1_alpha.prom").read_text()
    assert re.search(r'storage_mobility_share_info\{[^}]*share="streamed"[^}]*task_state="data_copying_completed"', metrics)
    assert re.search(r'storage_mobility_share_bytes_done\{[^}]*share="streamed"[^}]*\} %d\b' % record["migration"]["copy"]["bytes"],
                     metrics), metrics


def test_a_job_cancelled_through_the_runner_leaves_a_state_a_rerun_converges_from(lab):
    lab.create_shares("cancelled")
    # About 32 s of copying: the cancel comes at the first progress line, with room for a loaded machine.
    before = lab.fill_plain("cancelled", big_mb=32)

    def at_the_first_progress_line(job: Job) -> bool:
        return len(job.progress_events()) >= 1

    job = Job(lab, "migrate_share.yml", migrate_vars(lab, "cancelled", rate="1m"), cancel_when=at_the_first_progress_line)
    job.wait()
    lab.shares.add("cancelled")
    assert job.runner.status == "canceled", job.runner.status
    assert (job.artifacts / "status").read_text() == "canceled"
    # The job's processes are gone (the runner killed its process group); the copy, a detached job
    # on the data node, goes on, and the record says so.
    wait_until(lambda: not list(_pids_naming(job.private)), "the cancelled job's processes to go")
    record = lab.record("cancelled")
    assert record["task_state"] == "data_copying_in_progress", record["task_state"]
    status = read_json(_job_folder(lab, record) / "status.json")
    assert status["state"] == "running" and alive(status["pid"]), status

    rerun = Job(lab, "migrate_share.yml", migrate_vars(lab, "cancelled", rate="1m")).wait()
    rerun.ok()
    after = read_json(_job_folder(lab, record) / "status.json")
    assert after["state"] == "completed"
    assert (after["attempt"], after["pid"]) == (status["attempt"], status["pid"]), "the rerun did not attach to the copy"
    assert lab.record("cancelled")["task_state"] == "data_copying_completed"

    complete = Job(lab, "complete_share_migration.yml", {"share": "cancelled", "mobility_poll_seconds": 1}).wait()
    complete.ok()
    record = lab.record("cancelled")
    assert record["task_state"] == "migration_success" and record["host"] == BETA
    assert tree_tool.compare(before, tree_tool.manifest(str(lab.share_path("cancelled", "beta"))))["equal"]
    assert not lab.share_path("cancelled", "alpha").exists()


def _job_folder(lab: Lab, record: dict) -> Path:
    return job_state_dir() / record["migration"]["id"]


def _pids_naming(path: Path) -> list[int]:
    return processes_naming(path)


# ------------------------------------------------------------------------------------------ templates

SURVEY_TYPES = {"text", "textarea", "password", "integer", "float", "multiplechoice", "multiselect"}
DEFAULT_RE = r"(?<![\w.]){var} \| default\(([^)]*)\)(?: \| (bool|int|float))?"


def _templates() -> list[dict]:
    return json.loads((AWX_DIR / "job_templates.json").read_text(encoding="utf-8"))["job_templates"]


CONDITIONS = {"when", "that", "failed_when", "changed_when", "until"}


def _expressions(node, key=None) -> list[str]:
    """The Jinja expressions of a parsed playbook: what is inside ``{{ }}`` and the conditions."""
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in _expressions(v, k)]
    if isinstance(node, list):
        return [e for item in node for e in _expressions(item, key)]
    if isinstance(node, str):
        found = re.findall(r"\{\{(.*?)\}\}", node, re.S) + re.findall(r"\{%(.*?)%\}", node, re.S)
        return found + ([node] if key in CONDITIONS and "{{" not in node else [])
    return []


def _playbook_text(playbook: Path) -> tuple[str, str]:
    """The Jinja expressions of the playbook and of every task file it includes (no comments, no
    task names: only what reads variables)."""
    raw = playbook.read_text(encoding="utf-8")
    expressions = _expressions(yaml.safe_load(raw))
    for included in sorted(set(re.findall(r"include_tasks: (tasks/[\w.]+\.yml)", raw))):
        expressions += _expressions(yaml.safe_load((playbook.parent / included).read_text(encoding="utf-8")))
    # Attribute and item names (x.name, x['name']) and string literals are not variables: the
    # second text, where names are looked for, has no literals.
    text = "\n".join(expressions)
    return text, re.sub(r"'[^']*'|\"[^\"]*\"", "''", text)


def _required_vars(playbook: Path) -> set[str]:
    """The variables the playbook's first check asserts are defined."""
    plays = yaml.safe_load(playbook.read_text(encoding="utf-8"))
    checks = [t for t in plays[0]["tasks"] if "ansible.builtin.assert" in t]
    if not checks or checks[0] is not plays[0]["tasks"][0]:
        return set()  # no check of the request first (update_replicas: every variable is optional)
    check = checks[0]["ansible.builtin.assert"]["that"]
    check = [check] if isinstance(check, str) else check
    return set(re.findall(r"(\w+) is defined", " ".join(check))) - {"mobility_backends"}


def _expected(question: dict, default: str, kind: str | None) -> None:
    value = yaml.safe_load(default)
    var = question["variable"]
    if value == "omit":
        # An optional option: AWX leaves an unanswered optional question out of the extra variables.
        assert question["required"] is False and question["default"] == "", question
        assert question["type"] in ("text", "integer", "float"), question
    elif kind == "bool":
        assert question["type"] == "multiplechoice" and sorted(question["choices"]) == ["false", "true"], question
        assert question["default"] == str(bool(value)).lower(), f"{var}: survey default {question['default']!r}, playbook {value!r}"
    elif kind == "int":
        assert question["type"] == "integer", question
        assert question["default"] == int(value), f"{var}: survey default {question['default']!r}, playbook {value!r}"
        assert question["min"] <= int(value) <= question["max"], question
    elif kind == "float":
        assert question["type"] == "float" and float(question["default"]) == float(value), question
    else:
        assert question["type"] in ("text", "textarea") and question["default"] == value, question


@pytest.mark.parametrize("template", _templates(), ids=lambda t: t["playbook"])
def test_each_survey_asks_for_what_its_playbook_reads_with_its_type_and_default(template):
    project = AWX_DIR / "project" / template["playbook"]
    plays = yaml.safe_load(project.read_text(encoding="utf-8"))
    assert [p.get("ansible.builtin.import_playbook") for p in plays] == ["storage.mobility." + project.stem]
    playbook = REPO_ROOT / "playbooks" / template["playbook"]
    text, names = _playbook_text(playbook)
    survey = template["related"]["survey_spec"]
    assert template["survey_enabled"] is True and survey["spec"]
    variables = [q["variable"] for q in survey["spec"]]
    assert len(variables) == len(set(variables)), variables
    for question in survey["spec"]:
        var = question["variable"]
        assert question["type"] in SURVEY_TYPES, question
        assert re.search(r"(?<![\w.]){}(?![\w:=])".format(var), names), f"{project.stem} never reads {var}"
        found = re.findall(DEFAULT_RE.format(var=var), text)
        # One default; a place that only prints it (a task name) has no filter for its type.
        # default(x, true) also stands for a null or empty answer (what some AWX versions pass for an
        # optional question left empty): the default is x all the same.
        defaults = {re.sub(r",\s*true$", "", d) for d, _kind in found}
        kinds = {k for _d, k in found if k}
        assert len(defaults) <= 1 and len(kinds) <= 1, f"{project.stem} reads {var} with different defaults: {found}"
        if defaults:
            _expected(question, defaults.pop(), kinds.pop() if kinds else None)
        else:
            assert question["required"] is True and question["type"] == "text" and question["default"] == "", question
    assert _required_vars(playbook) <= {q["variable"] for q in survey["spec"] if q["required"] and q["default"] == ""}, \
        "a variable the playbook requires is not a required question without a default"


def test_every_phase_playbook_has_a_job_template_and_the_templates_name_their_objects():
    assert sorted(t["playbook"] for t in _templates()) == sorted(
        ["migrate_share.yml", "complete_share_migration.yml", "cancel_share_migration.yml", "update_replicas.yml",
         "migrate_volume.yml", "complete_ready_migrations.yml"])
    assert sorted(p.name for p in (AWX_DIR / "project").glob("*.yml")) == sorted(t["playbook"] for t in _templates())
    for template in _templates():
        assert template["job_type"] == "run" and template["ask_variables_on_launch"] is False
        for key, kind in (("project", "project"), ("inventory", "inventory"), ("execution_environment", "execution_environment")):
            assert template[key]["type"] == kind and template[key]["name"], template[key]
