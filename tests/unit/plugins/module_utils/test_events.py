"""Unit tests for plugins/module_utils/events.py and the journal lines the record store appends:
real pools in a temporary folder, real files, a real two-phase migration (posix driver)."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import time

import pytest

from mobility_helpers import RULE, Env

from ansible_collections.storage.mobility.plugins.module_utils import events, states
from ansible_collections.storage.mobility.plugins.module_utils.store import META_DIR
from ansible_collections.storage.mobility.plugins.module_utils.transport.local import LocalTransport
from ansible_collections.storage.mobility.plugins.module_utils.transport.runner import CommandRunner


def journal_lines(env, address):
    path = os.path.join(env.pool_path(address), META_DIR, events.JOURNAL_NAME)
    with open(path) as handle:
        return [json.loads(line) for line in handle]


def test_each_state_change_of_a_migration_is_one_line_in_the_pool_that_holds_the_record(tmp_path, monkeypatch):
    monkeypatch.setenv("MOBILITY_RUN_ID", "run-42")
    env = Env(tmp_path)
    env.create_share("s1", rules=[RULE])
    created = journal_lines(env, env.A)
    share_id = env.read_record(env.A, "s1")["id"]
    statuses = [(e["old"], e["new"]) for e in created if e["field"] == "status"]
    assert statuses[-1][1] == states.AVAILABLE and statuses[0][0] is None
    env.migrations().start("s1", env.B, {})
    env.migrations().complete("s1")
    lines = journal_lines(env, env.A) + journal_lines(env, env.B)
    task_states = [e["new"] for e in sorted(lines, key=lambda e: (e["revision"], e["time"])) if e["field"] == "task_state"]
    assert task_states[0] == states.MIGRATION_STARTING
    assert task_states[-1] == states.MIGRATION_SUCCESS
    assert states.MIGRATION_COMPLETING in task_states
    for line in lines:
        assert line["id"] == share_id and line["kind"] == "share" and line["name"] == "s1"
        assert line["run_id"] == "run-42" and line["time"].endswith("Z")
        assert line["event"] == "share." + line["field"] and line["old"] != line["new"]
    # Consecutive lines of one field chain: each old value is the previous line's new value.
    ordered = [e for e in sorted(lines, key=lambda e: e["revision"]) if e["field"] == "task_state"]
    for previous, current in zip(ordered, ordered[1:]):
        assert current["old"] == previous["new"]


def test_a_save_that_changes_no_watched_field_writes_no_line(tmp_path):
    env = Env(tmp_path)
    env.create_share("s1", rules=[RULE])
    before = journal_lines(env, env.A)
    env.edit("s1", description="only the description")
    assert journal_lines(env, env.A) == before


def test_a_journal_that_cannot_be_written_is_reported_not_fatal(tmp_path):
    env = Env(tmp_path)
    env.create_share("s1", rules=[RULE])
    path = os.path.join(env.pool_path(env.A), META_DIR, events.JOURNAL_NAME)
    os.unlink(path)
    os.mkdir(path)  # appending to a folder fails with EISDIR
    ctx = env.ctx()
    record, pool = ctx.load("s1")
    record["status"] = states.ERROR
    ctx.repo.save(record, pool, "set by the test")
    assert env.read_record(env.A, "s1")["status"] == states.ERROR
    failures = ctx.repo.journal_failures()
    assert len(failures) == 1 and failures[0][0] == "share.status" and path in failures[0][1]


def test_append_line_rotates_and_keeps_concurrent_lines_whole(tmp_path):
    transport = LocalTransport(CommandRunner())
    path = str(tmp_path / "events.jsonl")
    journal = events.Journal(transport, str(tmp_path))
    assert journal.path == path

    def writer(n):
        for i in range(200):
            journal.emit("test.line", "test", "w%d" % n, i=i, pad="x" * 300)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = journal.read()
    assert len(lines) == 800
    assert sorted((e["id"], e["i"]) for e in lines) == sorted(("w%d" % n, i) for n in range(4) for i in range(200))
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    size = os.stat(path).st_size
    transport.append_line(path, '{"a": 1}', rotate_bytes=size)
    assert os.path.exists(path + ".1") and os.stat(path + ".1").st_size == size
    with open(path) as handle:
        assert handle.read() == '{"a": 1}\n'
    assert len(journal.read()) == 801


def test_run_id_prefers_the_callers_then_awx_job(monkeypatch):
    monkeypatch.delenv("MOBILITY_RUN_ID", raising=False)
    monkeypatch.delenv("JOB_ID", raising=False)
    own = events.run_id()
    assert len(own) == 32
    monkeypatch.setenv("JOB_ID", "117")
    assert events.run_id() == "awx-117"
    monkeypatch.setenv("MOBILITY_RUN_ID", "window-3")
    assert events.run_id() == "window-3"


def test_write_text_atomic_sets_the_mode(tmp_path):
    transport = LocalTransport(CommandRunner())
    path = str(tmp_path / "m.prom")
    transport.write_text_atomic(path, "a 1\n", mode=0o644)
    assert open(path).read() == "a 1\n" and oct(os.stat(path).st_mode & 0o777) == "0o644"
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp")] == []


# -- the webhook: a real HTTP server on 127.0.0.1 -------------------------------------------------

class Receiver:
    """An HTTP server on 127.0.0.1 that answers each POST with the next status of ``statuses``
    (then 200) and keeps the bodies it took; ``hang`` makes it accept and never answer."""

    def __init__(self, statuses=(), hang=False):
        self.statuses = list(statuses)
        self.bodies = []
        self.requests = 0
        self.hang = hang
        self.release = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                receiver.requests += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hang:
                    receiver.release.wait(30)
                    return
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append((self.headers["Content-Type"], body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = "http://127.0.0.1:%d/hook?token=secret" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(**kwargs):
        made.append(Receiver(**kwargs))
        return made[-1]
    yield make
    events.configure_webhook(None)
    for server in made:
        server.close()


def emit_lines(tmp_path, count):
    journal = events.Journal(LocalTransport(CommandRunner()), str(tmp_path))
    return journal, [journal.emit("test.line", "test", "x%d" % i, i=i) for i in range(count)]


def test_the_webhook_receives_every_line_of_a_migration_as_the_journal_has_it(tmp_path, receiver):
    server = receiver()
    webhook = events.Webhook(server.url)
    events.configure_webhook(webhook)
    env = Env(tmp_path)
    env.create_share("s1", rules=[RULE])
    env.migrations().start("s1", env.B, {})
    env.migrations().complete("s1")
    journal = journal_lines(env, env.A) + journal_lines(env, env.B)
    assert len(journal) >= 5
    assert all(kind == "application/json" for kind, _body in server.bodies)
    posted = [json.loads(body) for _kind, body in server.bodies]
    assert sorted(posted, key=json.dumps) == sorted(journal, key=json.dumps)
    assert webhook.delivered == len(journal) and webhook.warnings() == []


def test_a_failing_answer_is_retried_a_bounded_number_of_times(tmp_path, receiver):
    server = receiver(statuses=[503, 500])
    webhook = events.Webhook(server.url, retries=2, backoff=0.01)
    events.configure_webhook(webhook)
    emit_lines(tmp_path, 1)
    assert server.requests == 3 and len(server.bodies) == 1 and webhook.delivered == 1
    server.statuses = [503, 503, 503, 503]
    emit_lines(tmp_path, 1)
    assert server.requests == 6 and webhook.down == "HTTP 503"
    emit_lines(tmp_path, 2)
    assert server.requests == 6 and webhook.skipped == 2
    text = " ".join(webhook.warnings())
    assert "given up after HTTP 503" in text and "2 later events" in text
    assert "secret" not in text and "http://127.0.0.1:" in text


def test_a_refused_line_is_not_retried_and_the_next_one_is_still_sent(tmp_path, receiver):
    server = receiver(statuses=[400])
    webhook = events.Webhook(server.url, retries=3, backoff=0.01)
    events.configure_webhook(webhook)
    emit_lines(tmp_path, 2)
    assert server.requests == 2 and len(server.bodies) == 1
    assert webhook.down is None and webhook.failures == [("test.line", "HTTP 400")]


def test_a_hanging_webhook_costs_one_lines_attempts_then_is_given_up(tmp_path, receiver):
    server = receiver(hang=True)
    webhook = events.Webhook(server.url, timeout=0.5, retries=1, backoff=0.05)
    events.configure_webhook(webhook)
    started = time.monotonic()
    journal, lines = emit_lines(tmp_path, 20)
    elapsed = time.monotonic() - started
    # Two attempts of 0.5 s each (so at least 1 s), then the webhook is given up: the hanging
    # server saw two requests, not 20 lines x 2 attempts. (No upper bound on the time: that
    # follows the machine's load; the counts are what prove the other 19 lines did not wait.)
    assert elapsed >= 1.0, elapsed
    assert server.requests == 2 and webhook.skipped == 19 and webhook.delivered == 0
    assert "timed out" in webhook.down.lower()
    assert [e["i"] for e in journal.read()] == list(range(20))


def test_a_webhook_that_is_down_never_fails_or_holds_up_the_steps(tmp_path, receiver):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there any more: connections are refused
    webhook = events.Webhook("http://127.0.0.1:%d/hook" % port, retries=2, backoff=0.01)
    events.configure_webhook(webhook)
    env = Env(tmp_path)
    env.create_share("s1", rules=[RULE])
    env.migrations().start("s1", env.B, {})
    env.migrations().complete("s1")
    # Given up after the first line's attempts: every later line is skipped without a connection.
    assert env.read_record(env.B, "s1")["task_state"] == states.MIGRATION_SUCCESS
    assert webhook.delivered == 0 and webhook.skipped >= 4
    assert "refused" in webhook.down.lower() or "Errno 111" in webhook.down
    assert [e["new"] for e in journal_lines(env, env.B) if e["field"] == "task_state"][-1] == states.MIGRATION_SUCCESS
