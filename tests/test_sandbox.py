"""The sandbox against hostile programs: each ends as a recorded failure within its limits, and the parent and a
pool beside it are intact. Runs the real namespaces; where they cannot be made the isolation cases are skipped
with the reason, and the refusal itself is tested."""

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    # terminal escape sequences in the answer line are shown inertly (a log or terminal prints the line)
    ("escape_codes", "print('\\x1b]0;owned\\x07 42')", None, "?]0;owned? 42"),
    # the exit status the launcher's own setup uses is the program's error, never an isolation failure
    ("exit_127", "import os\nos._exit(127)", "error", None),
    # a crash of the interpreter itself (a segmentation fault): killed by the signal, recorded
    ("segfault", "import ctypes\nctypes.string_at(0)", "killed", None),
    # the devices stay usable though their binds are read-only: writes to /dev/null, reads of urandom
    ("devices", "open('/dev/null', 'w').write('x')\nprint(len(open('/dev/urandom', 'rb').read(8)))", None, "8"),
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


# The attacks of a program that knows how the sandbox is built, each with ctypes and libc alone. Every program
# prints "held" when each step of its attack failed, or names the step that worked. {secret}, {sentinel},
# {socket_path} and {repo} are host paths the test made or knows.
PRELUDE = """import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.syscall.restype = ctypes.c_long
worked = []
def step(name, ok):
    if ok:
        worked.append(name)
def readable(path):
    try:
        open(path, 'rb').read(1)
        return True
    except OSError:
        return False
"""
ATTACKS = [
    # remount / read-write (and the binds), then write a file on the host
    (
        "remount_root",
        """
MS_REMOUNT, MS_BIND = 32, 4096
for target in (b'/', b'/usr', b'/sandbox', b'/proc'):
    step('remount ' + target.decode(), libc.mount(None, target, None, MS_REMOUNT | MS_BIND, None) == 0)
for path in ('/owned', {sentinel!r}, '/usr/owned'):
    try:
        open(path, 'w').write('owned')
        step('write ' + path, True)
    except OSError:
        pass
print('held' if not worked else worked)
""",
    ),
    # unmount the folders that could hide credentials, /proc, the root; read a token under them
    (
        "unmount_hiding",
        """
for target in (b'/proc', b'/sandbox', b'/usr', b'/dev/null', b'/'):
    step('umount ' + target.decode(), libc.umount2(target, 2) == 0)
for path in ({secret!r}, os.path.expanduser('~') + '/.cache/huggingface/token', '/root/.config'):
    step('read ' + path, readable(path))
print('held' if not worked else worked)
""",
    ),
    # unmount /proc and look for the host's: other processes, the parent's command line and descriptors
    (
        "unmount_proc",
        """
libc.umount2(b'/proc', 2)
pids = sorted(p for p in os.listdir('/proc') if p.isdigit()) if os.path.isdir('/proc') else []
step('other processes ' + str(pids), pids not in ([], ['1']))
step('parent cmdline', readable('/proc/{ppid}/cmdline'))
step('parent fds', os.path.exists('/proc/{ppid}/fd'))
print('held' if not worked else worked)
""",
    ),
    # write to every descriptor it might have inherited (the launcher's report among them)
    (
        "inherited_descriptors",
        """
open_fds = []
for fd in range(3, 1024):
    try:
        os.fstat(fd)
        open_fds.append(fd)
    except OSError:
        pass
step('inherited ' + str(open_fds), open_fds)
print('held' if not worked else worked)
""",
    ),
    # forge the launcher's verdict on every descriptor and through /proc, then fail: the parent must see the failure
    (
        "forge_report",
        """
for fd in range(0, 256):
    for text in (b'run exit 0\\n', b'{{"stage": "run", "status": "exit", "code": 0}}\\n'):
        try:
            os.write(fd, text) if fd > 2 else None
        except OSError:
            pass
for path in ('/proc/1/fd/3', '/proc/self/fd/3'):
    try:
        open(path, 'w').write('run exit 0\\n')
    except OSError:
        pass
sys.exit(3)
""",
    ),
    # outlive the call: a new session, new processes by every route, then stop its own process group
    (
        "survive",
        """
import signal
try:
    os.setsid()
except OSError:
    pass
for name, make in (('fork', os.fork), ('posix_spawn', lambda: os.posix_spawn('/bin/sleep', ['sleep', '60'], {{}}))):
    try:
        pid = make()
        if pid == 0:
            import time; time.sleep(60)
        step(name, True)
    except OSError:
        pass
for flags in (17, 17 | 0x10000000, 17 | 0x20000000, 0x00008000 | 17):  # SIGCHLD, +NEWUSER, +NEWPID, +CLONE_PARENT
    pid = libc.syscall(56 if os.uname().machine == 'x86_64' else 220, flags, 0, 0, 0, 0)
    if pid == 0:
        import time; time.sleep(60)
    step('clone ' + hex(flags), pid > 0)
print('held' if not worked else worked, flush=True)
os.kill(0, signal.SIGSTOP)  # PID 1 of its namespace ignores it; then it sleeps into the wall-clock limit
import time
time.sleep(60)
""",
    ),
    # outlive the call another way: clear the parent-death signal, then flood stdout so that the parent ends the call
    # early (it kills the launcher) while the program, its write refused, sleeps on
    (
        "outlive_an_early_end",
        """
import time
step('parent-death signal cleared', libc.prctl(1, 0, 0, 0, 0) == 0)
try:
    os.write(1, b'x' * 200000)
except OSError:
    pass
time.sleep(60)
""",
    ),
    # use capabilities it might have kept: new namespaces (which would give them back), ptrace, keys, bpf, ids
    (
        "capabilities",
        """
header, sets = (ctypes.c_uint32 * 2)(0x20080522, 0), (ctypes.c_uint32 * 6)()
step('capget', libc.capget(header, sets) != 0)
step('effective, permitted or inheritable ' + str(list(sets)), any(sets))
step('bounding set', any(libc.prctl(23, c, 0, 0, 0) == 1 for c in range(64)))  # PR_CAPBSET_READ
step('ambient set', any(libc.prctl(47, 1, c, 0, 0) == 1 for c in range(64)))  # PR_CAP_AMBIENT_IS_SET
step('no_new_privs off', libc.prctl(39, 0, 0, 0, 0) != 1)
step('no seccomp filter', libc.prctl(21, 0, 0, 0, 0) != 2)  # PR_GET_SECCOMP
step('uid 0', os.getuid() == 0 or os.geteuid() == 0)
for flags in (0x10000000, 0x00020000, 0x40000000, 0x20000000):
    step('unshare ' + hex(flags), libc.unshare(flags) == 0)
try:
    os.setuid(0)
    step('setuid 0', True)
except OSError:
    pass
step('ptrace', libc.ptrace(16, 1, 0, 0) == 0)  # PTRACE_ATTACH
step('chroot', libc.chroot(b'/sandbox') == 0)
nr = {{'x86_64': (250, 321, 298, 308, 310, 155), 'aarch64': (219, 280, 241, 268, 270, 41)}}[os.uname().machine]
for name, number in zip(('keyctl', 'bpf', 'perf_event_open', 'setns', 'process_vm_readv', 'pivot_root'), nr):
    step(name, libc.syscall(number, 0, 0, 0, 0, 0) >= 0)
step('mount tmpfs', libc.mount(b'x', b'/sandbox', b'tmpfs', 0, b'size=1g') == 0)
print('held' if not worked else worked)
""",
    ),
    # pin host memory through its folder: remount it larger, fill it; and map more than the budget
    (
        "pin_memory",
        """
step('remount larger', libc.mount(None, b'/sandbox', None, 32, b'size=4g') == 0)
try:
    with open('big', 'wb') as f:
        for _ in range(64):
            f.write(b'x' * 2**20)
    step('64 MiB in the folder', True)
except OSError:
    pass
try:
    block = bytearray(900 * 2**20)
    step('900 MiB mapped', True)
except MemoryError:
    pass
# memory that no address-space limit counts: System V segments outlive a detach; secret memory is locked
step('System V shared memory', libc.shmget(0, 256 * 2**20, 0o1600) >= 0)
step('memfd_secret', libc.syscall(447, 0) >= 0)
step('locked memory', libc.mlockall(1) == 0)
print('held' if not worked else worked)
""",
    ),
    # host sockets: a unix socket by path, an abstract one, the usual daemon paths
    (
        "host_sockets",
        """
import socket
for address in ({socket_path!r}, '\\0opensir-sandbox-test', '/run/dbus/system_bus_socket', '/var/run/docker.sock'):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(address)
        step('connect ' + repr(address), True)
    except OSError:
        pass
# the usual socket folders hold nothing but the way to a bound folder (a Python installation under /tmp, say)
binds = {binds!r}
for folder in ('/run', '/tmp', '/var', '/var/run'):
    for entry in (os.listdir(folder) if os.path.isdir(folder) else []):
        full = folder + '/' + entry
        step('unbound entry ' + full, not any(b == full or b.startswith(full + '/') for b in binds))
# families that a network namespace does not confine (AF_VSOCK reaches a virtual machine's host) or that reach
# the kernel's less-used code: packet, netlink, crypto, bluetooth, vsock
for family in (17, 16, 38, 31, 40, 2, 10):
    try:
        socket.socket(family, socket.SOCK_DGRAM if family in (2, 10, 16) else socket.SOCK_SEQPACKET).close()
        step('socket family ' + str(family), True)
    except OSError:
        pass
print('held' if not worked else worked)
""",
    ),
    # files outside any hidden list: system secrets, the user's configuration, the repository, the parent's files
    (
        "read_outside",
        """
for path in ('/etc/shadow', '/etc/passwd', '/etc/hostname', os.path.expanduser('~') + '/.npmrc', {repo!r},
             {sentinel!r}):
    step('read ' + path, readable(path))
# the root holds the bound folders' first components, /dev, /proc and its own folder: nothing else exists
allowed = {{b.split('/')[1] for b in {binds!r}}} | {{'dev', 'proc', 'sandbox'}}
step('root holds ' + str(sorted(os.listdir('/'))), not set(os.listdir('/')) <= allowed)
step('etc holds ' + str(sorted(os.listdir('/etc'))), not set(os.listdir('/etc')) <= {{'ld.so.cache', 'localtime'}})
print('held' if not worked else worked)
""",
    ),
    # what the kernel charges up to the host user who made the namespace: inotify watches (a program once held all of
    # the host's max_user_watches, and the host's root got ENOSPC), fanotify groups, queued signals (EAGAIN for root)
    (
        "user_quotas",
        """
import signal, threading
libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
fd, watches = libc.inotify_init1(0), 0
step('inotify instance', fd >= 0)
for folder, _, _ in os.walk('/usr') if fd >= 0 else ():
    if watches >= 2000 or libc.inotify_add_watch(fd, folder.encode(), 0xFFF) < 0:
        break
    watches += 1
step('inotify watches ' + str(watches), watches > 0)
step('fanotify group', libc.fanotify_init(0, 0) >= 0)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
queued = 0
try:
    while queued < 100000:
        signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
        queued += 1
except OSError:
    pass
step('queued signals ' + str(queued), queued > {pending})
print('held' if not worked else worked)
""",
    ),
    # kernel memory outside the budget: socket buffers in flight (AF_UNIX pairs once held 973 MiB), pipes made
    # larger, memory files; what is left is a few MiB of pipe buffers
    (
        "kernel_buffers",
        """
import fcntl, socket
for name, make in (('socketpair', socket.socketpair), ('unix socket', lambda: socket.socket(socket.AF_UNIX)),
                   ('memfd', lambda: os.memfd_create('x'))):
    try:
        make()
        step(name, True)
    except OSError:
        pass
pipes, buffered = [], 0
try:
    while True:
        pipes.append(os.pipe())
except OSError:
    pass
for r, w in pipes:
    try:
        fcntl.fcntl(w, 1031, 2**20)  # F_SETPIPE_SZ
        step('a 1 MiB pipe', True)
    except OSError:
        pass
    os.set_blocking(w, False)
    try:
        while True:
            buffered += os.write(w, b'x' * 65536)
    except OSError:
        pass
step('pipes hold ' + str(buffered), buffered > 4 * 2**20)
print('held' if not worked else worked)
""",
    ),
    # choose the name the kernel's log shows: prctl, /proc/self/comm, a link to the interpreter under another name,
    # the interpreter again (every execution after the launcher's own is refused)
    (
        "choose_a_name",
        """
def name():
    buf = ctypes.create_string_buffer(17)
    libc.prctl(16, buf, 0, 0, 0)  # PR_GET_NAME
    return buf.value
first = name()
step('PR_SET_NAME', libc.prctl(15, b'sshd-fake', 0, 0, 0) == 0)
try:
    open('/proc/self/comm', 'w').write('sshd-fake')
    step('/proc/self/comm', True)
except OSError:
    pass
step('named ' + repr(name()), name() != first)
for path in ('sshd-fake', sys.executable, '/bin/sh'):
    try:
        if path == 'sshd-fake':
            os.symlink(sys.executable, path)
        os.execv(path, [path, '-c', 'print("executed")'])
    except OSError:
        pass
print('held' if not worked else worked)
""",
    ),
    # host facts, not escapes: its name, the mount table (the binds' host paths), load, memory and pressure, the
    # kernel's command line
    (
        "host_facts",
        """
step('hostname ' + os.uname().nodename, os.uname().nodename == {hostname!r})
for path in ('/proc/self/mountinfo', '/proc/cmdline', '/proc/loadavg', '/proc/meminfo', '/proc/pressure', '/sys'):
    step(path, os.path.exists(path))
try:
    os.getloadavg()
    step('load average', True)
except OSError:
    pass
step('sysinfo', libc.sysinfo(ctypes.create_string_buffer(256)) == 0)
print('held' if not worked else worked)
""",
    ),
]
# what each attack ends as: its line "held", or (survive) the wall-clock limit after printing it
ATTACK_ENDS = {
    "forge_report": ("error", None),
    "survive": ("timeout", None),
    "outlive_an_early_end": ("output_limit", None),
}
ATTACK_LIMITS = SandboxLimits(cpu_seconds=2, wall_seconds=3.0, memory_bytes=512 * 2**20, output_bytes=4096)


def _processes() -> dict[str, str]:
    return {p: _cmdline(p) for p in os.listdir("/proc") if p.isdigit()}


@needs_isolation
@pytest.mark.parametrize("name, body", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attacks_fail(name, body, tmp_path, monkeypatch):
    """Each attack fails, and the parent's files, environment and process table are as before."""
    sentinel = tmp_path / "sentinel.txt"
    sentinel.write_text("parent's file")
    secret = tmp_path / "hf-home" / "token"
    secret.parent.mkdir()
    secret.write_text("hf_secret_token")
    monkeypatch.setenv("HF_HOME", str(secret.parent))
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(tmp_path / "host.sock"))
    listener.listen(1)
    abstract = socket.socket(socket.AF_UNIX)
    abstract.bind("\0opensir-sandbox-test")
    abstract.listen(1)
    repo = str(Path(__file__).resolve().parents[1] / "README.md")
    code = PRELUDE + body.format(sentinel=str(sentinel), secret=str(secret), socket_path=str(tmp_path / "host.sock"),
                                 repo=repo, ppid=os.getpid(), binds=sandbox.root_binds(),
                                 pending=sandbox.PENDING_SIGNALS, hostname=socket.gethostname())  # fmt: skip
    env_before, files_before, procs_before = dict(os.environ), sorted(tmp_path.rglob("*")), _processes()
    result = run_program(code, ATTACK_LIMITS)
    listener.close()
    abstract.close()
    failure, line = ATTACK_ENDS.get(name, (None, "held"))
    assert (result.failure, result.answer_line) == (failure, line), result
    assert result.isolated
    if failure == "isolation" or result.failure == "isolation":
        pytest.fail(result.stderr_tail)
    assert "hf_secret_token" not in (result.answer_line or "") + result.stderr_tail
    assert sentinel.read_text() == "parent's file" and secret.read_text() == "hf_secret_token"
    assert dict(os.environ) == env_before and sorted(tmp_path.rglob("*")) == files_before
    time.sleep(0.1)
    new = {p: c for p, c in _processes().items() if p not in procs_before and "main.py" in c}
    assert new == {}, new  # nothing of the program outlives the call


# Held while the host looks: locks on bound files and devices, device times changed, a name chosen, signals queued
# up to the quota; then it sleeps so that the host's checks run while it holds them.
HOLD = """
import fcntl, signal, struct, threading, time
held = []
for path in (os.path.join(sys.prefix, 'pyvenv.cfg'), sys.executable, '/dev/null'):
    fd = os.open(path, os.O_RDONLY)
    held.append(fd)
    for name, lock in (('flock', lambda: fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)),
                       ('lockf', lambda: fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)),
                       ('ofd', lambda: fcntl.fcntl(fd, 37, struct.pack('hhqqi', fcntl.F_RDLCK, 0, 0, 0, 0))),
                       ('lease', lambda: fcntl.fcntl(fd, 1024, fcntl.F_RDLCK))):
        try:
            lock()
            step(name + ' ' + path, True)
        except OSError:
            pass
for dev in ('/dev/null', '/dev/zero', '/dev/random', '/dev/urandom'):
    for times in (None, (0, 0)):  # now (anyone who may write the node), or any time (its owner)
        try:
            os.utime(dev, times)
            step('utime ' + dev, True)
        except OSError:
            pass
step('PR_SET_NAME', libc.prctl(15, b'sshd-fake', 0, 0, 0) == 0)
for flags in (0x00020000, 0x10000000):  # denied calls, for the kernel's log
    libc.unshare(flags)
libc.mount(b'x', b'/sandbox', b'tmpfs', 0, None)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
try:
    for _ in range(200000):
        signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
except OSError:
    pass
time.sleep(2.0)
print('held' if not worked else worked)
"""
# The host's room for queued signals under a low soft limit, asked once per line on stdin (the pending count is
# charged to the user, so what a program holds is what the host loses).
SIGNAL_ROOM = r"""
import resource, signal, sys, threading
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_SIGPENDING, (limit, resource.getrlimit(resource.RLIMIT_SIGPENDING)[1]))
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGRTMIN])
for _ in sys.stdin:
    room = 0
    try:
        while room < limit:
            signal.pthread_kill(threading.get_ident(), signal.SIGRTMIN)
            room += 1
    except OSError:
        pass
    while signal.sigtimedwait([signal.SIGRTMIN], 0) is not None:
        pass
    print(room, flush=True)
"""


def _locks_on(inodes: set[int]) -> list[str]:
    with open("/proc/locks") as f:
        return [line for line in f if any(f":{ino} " in line for ino in inodes)]


def _kernel_log() -> int | None:
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return None
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def _new_log_lines(fd: int) -> list[str]:
    lines = []
    while True:
        try:
            lines.append(os.read(fd, 8192).decode(errors="replace"))
        except BlockingIOError:
            return lines
        except OSError:  # a record overwritten meanwhile (EPIPE): read on
            continue


@needs_isolation
def test_attacks_fail_to_touch_the_host(tmp_path):
    """While a program holds everything it could, the host's locks, device times, room for queued signals and
    kernel log are as before (as root, and as the ordinary user in the run below)."""
    import threading

    targets = [os.path.join(sys.prefix, "pyvenv.cfg"), sys.executable, "/dev/null"]
    inodes = {os.stat(p).st_ino for p in targets}
    devices = {d: os.stat(d).st_mtime_ns for d in ("/dev/null", "/dev/zero", "/dev/random", "/dev/urandom")}
    room = subprocess.Popen([sys.executable, "-c", SIGNAL_ROOM, "5000"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip

    def ask() -> int:
        room.stdin.write("?\n")
        room.stdin.flush()
        return int(room.stdout.readline())

    before, locks_before, log = ask(), _locks_on(inodes), _kernel_log()
    results, during, locks = [], [], []
    run = threading.Thread(target=lambda: results.append(run_program(PRELUDE + HOLD, ATTACK_LIMITS)))
    run.start()
    while run.is_alive():
        during.append(ask())
        locks += [line for line in _locks_on(inodes) if line not in locks_before]
        time.sleep(0.05)
    run.join()
    new_log = "".join(_new_log_lines(log)) if log is not None else ""
    if log is not None:
        os.close(log)
    room.stdin.close()
    room.wait()
    (result,) = results
    host = {
        "locks": locks,  # no lock on a bound file, so no host process waits
        "device times": {d: os.stat(d).st_mtime_ns for d in devices} == devices,
        "signal room": min(during) >= before - sandbox.PENDING_SIGNALS - 10,  # the host's room for queued signals
        "log": "sshd-fake" not in new_log and "type=1326" not in new_log,  # no audit line, no chosen name
    }
    assert host == {"locks": [], "device times": True, "signal room": True, "log": True}, (host, before, during)
    assert len(during) >= 5  # the host looked while the program held
    assert (result.failure, result.answer_line) == (None, "held"), result


@needs_isolation
def test_cpu_limit_is_exact():
    """The program ends at its CPU seconds, not a second later: the soft limit equals the hard one (PID 1 of a
    namespace never receives the soft limit's SIGXCPU, so a hard limit one second above it used to decide)."""
    spin = (
        "import sys, time\nmark = 0.0\nwhile True:\n    t = time.process_time()\n    if t >= mark:\n"
        "        sys.stderr.write(f'cpu {t:.2f}\\n')\n        sys.stderr.flush()\n        mark = t + 0.05"
    )
    result = run_program(spin, SandboxLimits(cpu_seconds=1, wall_seconds=6.0, output_bytes=4096))
    reported = [float(x) for x in re.findall(r"cpu (\d+\.\d+)", result.stderr_tail)]
    assert result.failure == "cpu_time", result
    assert 0.8 <= max(reported) <= 1.0, reported


@needs_isolation
def test_unwritable_user_limits_make_isolation_unavailable(monkeypatch):
    """Where the namespace's own limits cannot be written (a read-only /proc/sys, as in a default Docker container;
    here a value the kernel refuses), no program runs without them: one line naming the limit, and the opt-in."""
    monkeypatch.setattr(sandbox, "USER_NAMESPACE_LIMITS", {"max_user_namespaces": -5})
    monkeypatch.setattr(sandbox, "_PROBE", [])  # the probe asks again
    assert isolation_unavailable_reason() == "user limits: max_user_namespaces: Invalid argument"
    with pytest.raises(SandboxUnavailable, match="user limits: max_user_namespaces.*allow_unisolated"):
        run_program("print(1)")


def test_oversized_program_is_refused_as_too_large():
    """A program over program_bytes is refused before anything runs, with its size in the one-line reason; one at
    the limit runs (a 2 MiB program used to fail as 'isolation': no space left writing main.py)."""
    limits = SandboxLimits(program_bytes=4096)
    cases = [
        # two MiB of valid code: refused, nothing started
        ("x = 1\n" * 350_000 + "print(42)", SandboxLimits(), "too_large"),
        # one byte over a small limit
        ("#" * 4088 + "\nprint(7)", limits, "too_large"),
        # multi-byte characters count as their UTF-8 bytes
        ("# " + "é" * 2100 + "\nprint(7)", limits, "too_large"),
    ]
    for source, lim, failure in cases:
        result = run_program(source, lim)
        assert result.failure == failure and result.seconds == 0.0 and not result.isolated
        assert "bytes" in result.stderr_tail and "\n" not in result.stderr_tail
    with pytest.raises(ValueError, match="open_files"):
        run_program("print(1)", SandboxLimits(open_files=sandbox.EXEC_FD))
    if REASON is None:  # exactly at the limit: runs
        at_limit = run_program("#" * 4087 + "\nprint(7)", limits)
        assert (at_limit.failure, at_limit.answer_line) == (None, "7"), at_limit


def test_report_parser_holds_against_floods():
    """The parent reads the launcher's report by a fixed grammar: floods, deep nesting and forged text give a
    fixed reason, never an exception and never the text itself."""
    cases = [
        # a verdict of the grammar is read as it is
        (b"start\nrun exit 3\n", {"stage": "run", "status": "exit", "code": 3}),
        (b"start\nrun signal 9\n", {"stage": "run", "status": "signal", "code": -9}),
        (b"run timeout\n", {"stage": "run", "status": "timeout"}),
        # an exit without the "start" line: the setup child ended before the program's first byte
        (b"run exit 127\n", {"stage": "isolation", "error": "the sandbox's setup ended before the program started"}),
        # a start without a verdict
        (b"start\n", {"stage": "isolation", "error": "the launcher's report has no verdict"}),
        (b"isolation unshare: Operation not permitted\n", {"stage": "isolation", "error": "unshare: Operation not permitted"}),
        # deeply nested JSON (RecursionError in a JSON parser) is not of the grammar
        (b"[" * 100_000, {"stage": "isolation", "error": "the launcher's report is too long"}),
        (b"[" * 3000, {"stage": "isolation", "error": "the launcher's report is malformed"}),
        # a forged JSON verdict with the program's text
        (b'{"stage": "isolation", "error": "program text"}\n', {"stage": "isolation", "error": "the launcher's report is malformed"}),
        # hundreds of MiB are refused by length (the reader also stops buffering past REPORT_BYTES)
        (b"run exit 0\n" * 1000, {"stage": "isolation", "error": "the launcher's report is too long"}),
        # nothing at all
        (b"", {"stage": "isolation", "error": "the launcher ended without a report"}),
        # binary garbage
        (bytes(range(256)), {"stage": "isolation", "error": "the launcher's report is malformed"}),
    ]  # fmt: skip
    for data, expected in cases:
        assert sandbox.parse_report(data) == expected


def test_seccomp_filter_shape():
    """The filter refuses every listed call on both architectures and is a valid classic-BPF program (jumps stay
    inside it, it ends in a return)."""
    for machine in ("x86_64", "aarch64"):
        prog = sandbox.seccomp_filter(machine)
        names = sandbox._ARCH[machine][1]
        assert {"mount", "umount2", "pivot_root", "unshare", "setns", "ptrace", "process_vm_readv",
                "process_vm_writev", "keyctl", "bpf", "perf_event_open"} <= set(names)  # fmt: skip
        denied = {k for code, _, _, k in prog if code == 0x15}
        assert set(names.values()) <= denied
        for i, (code, jt, jf, _) in enumerate(prog):
            if code in (0x15, 0x35, 0x45):
                assert i + 1 + max(jt, jf) < len(prog)
        assert prog[-1][0] == 0x06 and len(prog) < 4096


def test_probe_failure_is_not_kept(monkeypatch):
    """A probe that timed out on a busy machine is asked again; only a settled answer is kept."""
    calls = []

    def busy(source, limits, isolate):
        calls.append(1)
        ok = len(calls) > 1
        return sandbox.ProgramResult("ok" if ok else None, None if ok else "timeout", 0, 0.0, "", True)

    monkeypatch.setattr(sandbox, "_PROBE", [])
    monkeypatch.setattr(sandbox, "_run", busy)
    assert "timeout" in sandbox.isolation_unavailable_reason()
    assert sandbox.isolation_unavailable_reason() is None and len(calls) == 2
    assert sandbox.isolation_unavailable_reason() is None and len(calls) == 2  # settled: not probed again


AS_USER_ENV = "OPENSIR_SANDBOX_AS_USER"


@needs_isolation
@pytest.mark.skipif(os.geteuid() != 0, reason="this suite already runs as an ordinary user")
@pytest.mark.skipif(bool(os.environ.get(AS_USER_ENV)), reason="the ordinary user's own run")
def test_attacks_fail_as_an_ordinary_user(tmp_path):
    """The same attacks and hostile programs as the unprivileged ``nobody`` (where the user-namespace map is the
    user's own ids). A private mount namespace makes this Python's installation traversable for it when it lives
    in root's home."""
    repo = Path(__file__).resolve().parents[1]
    helper = tmp_path / "as_user.py"
    helper.write_text(AS_USER_HELPER)
    proc = subprocess.run(
        [sys.executable, str(helper), sys.base_prefix, sys.executable, str(repo)],
        capture_output=True, text=True, timeout=300, env={**os.environ, AS_USER_ENV: "1"},
    )  # fmt: skip
    tail = proc.stdout[-3000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, tail
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) == len(ATTACKS) + len(HOSTILE) + 3, tail  # every isolation case ran
    assert " failed" not in proc.stdout and " error" not in proc.stdout, tail


# Run as root: a private mount namespace in which root's home shows only the Python installation (read-only, so
# an ordinary user can reach it), then the ids of nobody, then this test file's isolation tests.
AS_USER_HELPER = r"""
import ctypes, os, sys, tempfile
base_prefix, python, repo = sys.argv[1:4]
basetemp = tempfile.mkdtemp(prefix="opensir-as-user-")  # outside root's private pytest folder
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
def mount(src, dst, fs, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src), enc(dst), enc(fs), flags, enc(data)) != 0:
        raise OSError(ctypes.get_errno(), f"mount {dst}")
assert libc.unshare(0x00020000) == 0  # CLONE_NEWNS
mount(None, "/", None, 16384 | (1 << 18))  # MS_REC | MS_PRIVATE
home = os.path.expanduser("~")
if base_prefix.startswith(home + "/"):
    keep = tempfile.mkdtemp()
    mount(base_prefix, keep, None, 4096)
    mount("as-user", home, "tmpfs", 2 | 4, "mode=0755")
    os.makedirs(base_prefix)
    mount(keep, base_prefix, None, 4096)
os.chown(basetemp, 65534, 65534)
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
os.chdir(repo)
env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": basetemp, "OPENSIR_SANDBOX_AS_USER": "1"}
os.execve(python, [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}/t",
                   "tests/test_sandbox.py", "-k", "attacks_fail or hostile or outlives or cpu_limit"], env)
"""
