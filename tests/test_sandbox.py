"""The sandbox against hostile programs: each ends as a recorded failure within its limits, and the parent and a
pool beside it are intact. Runs the real namespaces; where they cannot be made the isolation cases are skipped
with the reason, and the refusal itself is tested."""

import os
import socket
import time

import pytest

from opensir_lite import sandbox
from opensir_lite.pool import ProblemPool
from opensir_lite.sandbox import SandboxLimits, SandboxUnavailable, isolation_unavailable_reason, run_program

REASON = isolation_unavailable_reason()
needs_isolation = pytest.mark.skipif(REASON is not None, reason=f"no namespaces here: {REASON}")
LIMITS = SandboxLimits(cpu_seconds=1, wall_seconds=3.0, memory_bytes=256 * 2**20, output_bytes=4096)

# (name, program, expected failure, expected answer line). {target} is a file outside the sandbox's folder.
HOSTILE = [
    # a plain answer: the last non-empty line, stripped
    ("answer", "print('work')\nprint(' 42 ')\nprint()", None, "42"),
    # spinning forever: the CPU limit (SIGKILL at the hard limit, reported as cpu_time)
    ("infinite_loop", "while True:\n    pass", "cpu_time", None),
    # sleeping forever uses no CPU: the wall-clock limit
    ("sleep", "import time\ntime.sleep(600)", "timeout", None),
    # asking for 10 GB: the address-space limit turns it into MemoryError
    ("memory_bomb", "x = bytearray(10 * 2**30)", "memory", None),
    # forking forever: no process may start another (fork fails), so it spins into the CPU limit
    (
        "fork_bomb",
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        "cpu_time",
        None,
    ),
    # one fork, caught: the failure is the program's own error
    ("fork_once", "import os\nos.fork()", "error", None),
    # a subprocess is a fork too
    ("subprocess", "import subprocess\nsubprocess.run(['true'])", "error", None),
    # endless output: cut at output_bytes
    ("huge_output", "while True:\n    print('x' * 1000)", "output_limit", None),
    # huge stderr counts too
    ("huge_stderr", "import sys\nwhile True:\n    sys.stderr.write('y' * 1000)", "output_limit", None),
    # writing outside its folder: a read-only file system
    ("write_outside", "open({target!r}, 'w').write('owned')", "error", None),
    # overwriting the pool: read-only too
    ("write_pool", "open({pool!r}, 'a').write('{{}}\\n')", "error", None),
    # filling its own folder: the tmpfs (and RLIMIT_FSIZE) is small
    ("fill_folder", "open('big', 'wb').write(b'x' * 10**8)", "error", None),
    # a socket to the outside: no network interface
    ("socket_out", "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)", "error", None),
    # even loopback is down in its namespace
    ("socket_local", "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", "error", None),
    # the environment holds no token
    ("env_token", "import os\nprint(os.environ.get('HF_TOKEN', 'none'))", None, "none"),
    # nor does the parent's /proc entry (another PID namespace: the parent is not there)
    ("proc_parent", "import os\nprint(os.path.exists('/proc/{ppid}/environ'))", None, "False"),
    # its folder is empty and private
    ("folder", "import os\nprint(sorted(os.listdir('.')))", None, "['main.py']"),
    # a syntax error is an error, not a crash of the parent
    ("syntax_error", "print(", "error", None),
    # exit 0 without a line
    ("no_output", "x = 1", "no_output", None),
    # a crash of the interpreter itself (a segmentation fault): killed by the signal, recorded
    ("segfault", "import ctypes\nctypes.string_at(0)", "killed", None),
]


@needs_isolation
@pytest.mark.parametrize("name, source, failure, line", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_programs(name, source, failure, line, tmp_path, monkeypatch):
    target = tmp_path / "outside.txt"
    pool = ProblemPool.from_seed()
    pool_path = tmp_path / "pool.jsonl"
    pool.save(pool_path)
    before = pool_path.read_bytes()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    code = source.format(target=str(target), pool=str(pool_path), port=listener.getsockname()[1], ppid=os.getpid())
    start = time.monotonic()
    result = run_program(code, LIMITS)
    elapsed = time.monotonic() - start
    listener.close()
    assert result.failure == failure, result
    assert result.answer_line == line
    assert result.isolated
    assert elapsed < LIMITS.wall_seconds + 3  # within its limits (the launcher's start included)
    assert not target.exists()
    assert pool_path.read_bytes() == before  # the pool is intact
    assert "hf_secret_token" not in (result.answer_line or "") + result.stderr_tail


@needs_isolation
def test_no_process_outlives_the_program():
    """Threads are allowed, and nothing of a program outlives it (its PID namespace ends with its first process)."""
    code = "import threading, time\nt = threading.Thread(target=time.sleep, args=(60,), daemon=True)\nt.start()\nprint('ok')"
    result = run_program(code, LIMITS)
    assert result.ok and result.answer_line == "ok"
    survivors = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p).endswith("main.py")]
    assert survivors == []


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


@needs_isolation
def test_answer_line_is_cut():
    """A long last line is cut to MAX_ANSWER_CHARS: the parent keeps text, bounded."""
    result = run_program("print('9' * 3000)", LIMITS)
    assert result.ok and len(result.answer_line) == sandbox.MAX_ANSWER_CHARS


def test_refuses_without_isolation_unless_opted_in(monkeypatch):
    """No namespaces: one clear line naming the reason and the opt-in; with the opt-in the limits still hold."""
    monkeypatch.setattr(sandbox, "isolation_unavailable_reason", lambda: "unshare: Operation not permitted")
    with pytest.raises(SandboxUnavailable) as err:
        run_program("print(1)")
    message = str(err.value)
    assert "\n" not in message and "Operation not permitted" in message and "allow_unisolated" in message
    result = run_program("print(6 * 7)", LIMITS, allow_unisolated=True)
    assert result.ok and result.answer_line == "42" and not result.isolated
    spin = run_program("while True:\n    pass", LIMITS, allow_unisolated=True)
    assert spin.failure == "cpu_time"
    fork = run_program("import os\nos.fork()", LIMITS, allow_unisolated=True)
    assert fork.failure == "error"  # the process filter needs no namespace
