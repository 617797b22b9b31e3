"""The Python executor: untrusted tools and verifiers run in a limited child process."""

import apsw
import pytest

from envgen.sandbox import PythonSandbox, SandboxLimits

SOURCE = '''
def add(db, x):
    db.execute("INSERT INTO t (x) VALUES (?)", (x,))
    return {"rows": db.execute("SELECT COUNT(*) FROM t").fetchone()[0]}

def spin(db):
    while True:
        pass

def hog(db):
    return len(bytearray(4 << 30))

def connect(db):
    import socket
    socket.create_connection(("127.0.0.1", 9))

def read_secret(db):
    return open("/etc/hostname").read()

def write_file(db):
    open("/tmp/awmjax-sandbox-escape", "w").write("x")

def shell(db):
    import os
    return os.system("true")

def verify(initial_db, final_db, final_answer):
    before = initial_db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
    after = final_db.execute("SELECT COUNT(*) FROM t").fetchone()[0]
    return {"result": "complete" if after > before else "incomplete", "evidence": {"before": before, "after": after}}

def tamper(initial_db, final_db, final_answer):
    final_db.execute("DELETE FROM t")
'''


@pytest.fixture(scope="module")
def image():
    c = apsw.Connection(":memory:")
    c.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, x INTEGER)")
    c.execute("INSERT INTO t (x) VALUES (1)")
    return c.serialize("main")


@pytest.fixture(scope="module")
def sandbox():
    with PythonSandbox(SandboxLimits(call_seconds=2.0, memory_bytes=512 << 20)) as sb:
        yield sb


def test_tool_runs_and_returns_new_image(sandbox, image):
    res = sandbox.run_tool(SOURCE, "add", image, {"x": 7})
    assert res.outcome == "ok" and res.value == {"rows": 2}
    c = apsw.Connection(":memory:")
    c.deserialize("main", res.image)
    assert c.execute("SELECT x FROM t ORDER BY id").fetchall() == [(1,), (7,)]


def test_runaway_tool_is_killed_and_reported(sandbox, image):
    restarts = sandbox.restarts
    res = sandbox.run_tool(SOURCE, "spin", image, {}, timeout=0.5)
    assert res.outcome == "env_error" and "deadline" in res.message
    assert sandbox.restarts == restarts + 1
    assert sandbox.run_tool(SOURCE, "add", image, {"x": 1}).outcome == "ok"  # a fresh child took over


def test_memory_hog_is_stopped(sandbox, image):
    res = sandbox.run_tool(SOURCE, "hog", image, {})
    assert res.outcome == "env_error" and "memory" in res.message


@pytest.mark.parametrize("entry, word", [("connect", "socket"), ("read_secret", "reading"), ("write_file", "writing"), ("shell", "os.system")])
def test_escapes_are_refused(sandbox, image, entry, word):
    res = sandbox.run_tool(SOURCE, entry, image, {})
    assert res.outcome == "error" and "sandbox" in res.message and word in res.message


def test_bad_source_and_bad_arguments_are_errors_not_crashes(sandbox, image):
    assert "does not load" in sandbox.run_tool("def f(:\n", "f", image, {}).message
    assert sandbox.run_tool(SOURCE, "missing", image, {}).outcome == "error"
    assert sandbox.run_tool(SOURCE, "add", image, {"y": 1}).outcome == "error"


def test_verifier_reads_both_states_read_only(sandbox, image):
    after = sandbox.run_tool(SOURCE, "add", image, {"x": 3}).image
    res = sandbox.run_verifier(SOURCE, image, after, "done")
    assert res.outcome == "ok" and res.value["result"] == "complete"
    assert sandbox.run_verifier(SOURCE, image, image, None).value["result"] == "incomplete"
    bad = sandbox.run_verifier(SOURCE.replace("def verify", "def _v").replace("def tamper", "def verify"), image, after, None)
    assert bad.outcome == "error" and "readonly" in bad.message.lower()
