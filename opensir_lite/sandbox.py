"""A sandbox for model-written Python: one program, no network, no privilege, a minimal root, hard limits, one
line back.

:func:`run_program` starts ``python -I -S`` on a small launcher (:mod:`opensir_lite.sandbox_launcher`) with an empty
environment. It reads the program from stdin and, before any byte of it runs, builds what bubblewrap and nsjail build:

- **namespaces** (``unshare(2)``): user, mount, network, PID, IPC, UTS (host name ``sandbox``) and cgroup, with
  the user namespace's own limits (``/proc/sys/user/max_*``: namespaces, inotify) at 0. No network interface but a
  loopback that is down; the program is PID 1 of its own PID namespace; when it ends, the kernel kills the rest.
- **an unprivileged id**: uid/gid 1000 of its namespace, the host's ``nobody`` (65534) when the caller is root,
  else the caller's own ids; never 0.
- **a minimal root** (``pivot_root(2)`` into a small ``tmpfs``, the host's root unmounted): read-only binds of
  ``/usr``, the ``/bin``/``/lib`` links, the linker cache, the Python installation and the virtual environment;
  read-only, no-exec ``/dev/null``, ``zero``, ``random``, ``urandom``; a small writable, no-exec ``tmpfs`` at
  ``/sandbox``. No ``/proc``, no home, no ``/etc``, no repository, no socket: nothing else exists inside.
- **no capability and no way to gain one**: every capability set cleared and checked, securebits locked,
  ``PR_SET_NO_NEW_PRIVS``, and a seccomp filter that refuses mount, umount, pivot_root, chroot, unshare, setns,
  ptrace, process_vm_readv/writev, keyctl, bpf, perf_event_open, the new mount API, sockets and socket pairs of
  every family, execve (the launcher starts the interpreter by ``execveat`` of one descriptor; nothing else may),
  file locks and leases, memfd_create, memfd_secret, sysinfo, renaming the process or changing its parent-death
  signal, io_uring, System V memory, semaphores and queues, module and kexec calls, fork, vfork, clone3 and any
  clone that is not a thread or makes a namespace; other system-call ABIs (32-bit, x32) are refused.
- **limits**: CPU seconds (soft = hard: exact), address space (the tmpfs sizes inside the memory budget),
  processes (threads), file size, open files, queued signals, no core files, no locked memory, no message queues;
  a wall-clock limit kills the namespace; a program over ``program_bytes`` is refused unread (``too_large``).

Three processes: the launcher stays outside every namespace and keeps the clock; a second process enters the
namespaces and waits for the program; the program cannot see or signal either, and every descriptor but its stdout
and stderr is closed before it starts. The report to the parent goes through a pipe only the launcher writes. The
parent reads at most ``output_bytes`` of stdout and stderr (more ends the program as ``output_limit``), takes only
the **last non-empty line of stdout** as text, reads at most :data:`REPORT_BYTES` of the report and accepts only
lines of its fixed grammar, and kills the launcher's process group at the end.

Where the namespaces cannot be made (a container without user namespaces, some CI runners), :func:`run_program`
raises :class:`SandboxUnavailable`, one line naming why, unless the caller passes ``allow_unisolated=True``: then the
program runs with the limits, the filter, the empty environment and a temporary folder, but *with* the host's
network and file system. What it promises and what it does not: docs/programs.md. Nothing else in the package
imports this module except :mod:`opensir_lite.programs` (and the configuration's preflight).
"""

from __future__ import annotations

import json
import os
import platform
import re
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass

# How a program ended (ProgramResult.failure); None means it exited 0 and printed a line.
FAILURES = (
    "timeout",  # the wall-clock limit passed
    "cpu_time",  # RLIMIT_CPU (SIGXCPU / SIGKILL)
    "memory",  # MemoryError or the address-space limit
    "output_limit",  # more than output_bytes on stdout or stderr
    "error",  # any other non-zero exit (an exception, a syntax error)
    "killed",  # ended by another signal
    "no_output",  # exited 0 without printing a non-empty line
    "isolation",  # the namespaces, the minimal root or the privilege drop could not be made
    "too_large",  # the program is larger than SandboxLimits.program_bytes; nothing was run
)


MAX_ANSWER_CHARS = 200  # the answer line is cut to this length
REPORT_BYTES = 4096  # the most the parent reads of the launcher's report; its lines are a few dozen bytes
INNER_ID = 1000  # the program's uid and gid inside its user namespace (never 0)
NOBODY_ID = 65534  # the host id the program runs as when the caller may map one (root)
ROOT_BYTES = 256 * 2**10  # the minimal root's tmpfs: directories, links and mount points only
EXEC_FD = 1000  # the interpreter's descriptor for the one execveat the filter allows (above any open-files limit)
PENDING_SIGNALS = 64  # RLIMIT_SIGPENDING: queued signals are charged up to the host user who made the namespace
_NAMESPACES = ("user", "pid", "net", "mnt", "ipc", "uts", "cgroup", "time")
_COUNTED = ("inotify_instances", "inotify_watches", "fanotify_groups", "fanotify_marks")
# the user namespace's own limits on what the kernel counts per user (0: none for the program)
USER_NAMESPACE_LIMITS = {f"max_{name}": 0 for name in (*_COUNTED, *(f"{kind}_namespaces" for kind in _NAMESPACES))}
PROBE_WALL_SECONDS = 30.0  # the isolation probe's wall-clock limit: generous, so that a busy machine still passes


class SandboxUnavailable(RuntimeError):
    """The namespaces cannot be made on this machine; the message is one line naming why and the opt-in."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (every program of the project is a few lines of arithmetic)."""

    cpu_seconds: int = 2  # RLIMIT_CPU: CPU time; a program that computes an answer needs milliseconds
    wall_seconds: float = 5.0  # killed after this long, whatever it is doing (sleeping, blocked, spinning)
    memory_bytes: int = 512 * 2**20  # the memory budget: RLIMIT_AS plus the tmpfs sizes; sympy needs ~150 MiB
    output_bytes: int = 64 * 2**10  # stdout and stderr each; more ends it as output_limit
    file_bytes: int = 2**20  # RLIMIT_FSIZE, and the size of its tmpfs working folder
    program_bytes: int = 256 * 2**10  # larger programs (UTF-8) are refused as too_large; it is written into the folder
    open_files: int = 64  # RLIMIT_NOFILE (below EXEC_FD)
    processes: int = 16  # RLIMIT_NPROC in its user namespace: threads only (new processes are refused anyway)

    @property
    def address_space_bytes(self) -> int:
        """RLIMIT_AS: the memory budget less the tmpfs the program can fill (its folder) and the root's."""
        return self.memory_bytes - self.file_bytes - ROOT_BYTES


@dataclass(frozen=True)
class ProgramResult:
    """How one program ended. ``answer_line`` is the last non-empty stdout line (None on failure)."""

    answer_line: str | None
    failure: str | None  # one of FAILURES, None when the program exited 0 with a line
    exit_code: int | None  # the program's exit status, or -signal; None when it never started
    seconds: float  # wall-clock, launcher included
    stderr_tail: str  # the last 300 characters of the program's stderr, or the launcher's own isolation reason
    isolated: bool  # ran inside the namespaces

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict:
        return asdict(self)


LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launcher.py")


# System calls the filter refuses with EPERM, by architecture: (audit arch, {name: number}, clone, clone3,
# pivot_root). fork and vfork exist on x86_64 only; aarch64 has the generic table.
_X86_64 = {
    "shmget": 29, "socket": 41, "socketpair": 53, "fork": 57, "vfork": 58, "execve": 59, "semget": 64, "msgget": 68,
    "sysinfo": 99, "ptrace": 101, "syslog": 103, "pivot_root": 155, "chroot": 161, "acct": 163, "settimeofday": 164,
    "mount": 165, "umount2": 166, "swapon": 167, "swapoff": 168, "reboot": 169, "sethostname": 170,
    "setdomainname": 171, "iopl": 172, "ioperm": 173, "init_module": 175, "delete_module": 176, "quotactl": 179,
    "clock_settime": 227, "kexec_load": 246, "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272,
    "perf_event_open": 298, "name_to_handle_at": 303, "open_by_handle_at": 304, "setns": 308, "process_vm_readv": 310,
    "process_vm_writev": 311, "finit_module": 313, "memfd_create": 319, "kexec_file_load": 320, "bpf": 321,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
    "memfd_secret": 447,
}  # fmt: skip
_AARCH64 = {
    "umount2": 39, "mount": 40, "pivot_root": 41, "chroot": 51, "quotactl": 60, "acct": 89, "unshare": 97,
    "kexec_load": 104, "init_module": 105, "delete_module": 106, "clock_settime": 112, "syslog": 116, "ptrace": 117,
    "reboot": 142, "sethostname": 161, "setdomainname": 162, "settimeofday": 170, "sysinfo": 179, "msgget": 186,
    "semget": 190, "shmget": 194, "socket": 198, "socketpair": 199, "add_key": 217, "request_key": 218, "keyctl": 219,
    "execve": 221, "swapon": 224, "swapoff": 225, "perf_event_open": 241, "name_to_handle_at": 264,
    "open_by_handle_at": 265, "setns": 268, "process_vm_readv": 270, "process_vm_writev": 271, "finit_module": 273,
    "memfd_create": 279, "bpf": 280, "userfaultfd": 282, "kexec_file_load": 294, "io_uring_setup": 425,
    "io_uring_enter": 426, "io_uring_register": 427, "open_tree": 428, "move_mount": 429, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "memfd_secret": 447,
}  # fmt: skip
_ARCH = {"x86_64": (0xC000003E, _X86_64, 56, 435), "aarch64": (0xC00000B7, _AARCH64, 220, 435)}
# Calls refused by argument: flock and fcntl's locks (a lock on a bound file blocks the host's processes), leases,
# directory notification and larger pipes (memory no limit counts); execveat but the launcher's own (EXEC_FD, an empty
# path); prctl's PR_SET_PDEATHSIG (the program keeps the parent-death signal the launcher set) and PR_SET_NAME (its
# name in the kernel's log stays the interpreter's)
_ARG_CALLS = {"x86_64": {"fcntl": 72, "flock": 73, "prctl": 157, "execveat": 322},
              "aarch64": {"fcntl": 25, "flock": 32, "prctl": 167, "execveat": 281}}  # fmt: skip
F_LOCKS = (6, 7, 37, 38)  # F_SETLK, F_SETLKW, F_OFD_SETLK, F_OFD_SETLKW
F_REFUSED = (1024, 1026, 1031)  # F_SETLEASE, F_NOTIFY, F_SETPIPE_SZ
PR_SET_PDEATHSIG, PR_SET_NAME, AT_EMPTY_PATH = 1, 15, 0x1000
CLONE_THREAD = 0x00010000
# CLONE_NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET, NEWTIME
CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80
UNSHARE_FLAGS = CLONE_NAMESPACES & ~0x80  # every namespace but time


_LD, _JEQ, _JGE, _JSET, _RET = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _EPERM, _ENOLCK, _ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 37, 0x00050000 | 38


def _by_argument(nr: int, arg: int, refused: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """For call ``nr``: return each (value, action) when argument ``arg`` (its low word) is that value, else allow."""
    body = [(_LD, 0, 0, 16 + 8 * arg)]
    for value, action in refused:
        body += [(_JEQ, 0, 1, value), (_RET, 0, 0, action)]
    body += [(_RET, 0, 0, _ALLOW)]
    return [(_JEQ, 0, len(body), nr)] + body


def seccomp_filter(machine: str) -> list[tuple[int, int, int, int]]:
    """The classic-BPF program (code, jt, jf, k) for ``machine``: refuse the table's calls (fork, vfork, execve and
    sockets of every family among them) with EPERM, flock and fcntl's locks with ENOLCK, fcntl's leases, notification
    and pipe sizes, prctl(PR_SET_PDEATHSIG / PR_SET_NAME) and every execveat but the launcher's with EPERM, clone3
    with ENOSYS (so that libc falls back to clone), and allow clone only for a thread that makes no namespace; every
    other ABI gets EPERM for everything."""
    arch, table, nr_clone, nr_clone3 = _ARCH[machine]
    calls = _ARG_CALLS[machine]
    LD, JEQ, JGE, JSET, RET, ALLOW, EPERM = _LD, _JEQ, _JGE, _JSET, _RET, _ALLOW, _EPERM
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, EPERM), (LD, 0, 0, 0)]
    if machine == "x86_64":
        prog += [(JGE, 0, 1, 0x40000000), (RET, 0, 0, EPERM)]  # the x32 ABI
    for nr in sorted(table.values()):
        prog += [(JEQ, 0, 1, nr), (RET, 0, 0, EPERM)]
    prog += [(JEQ, 0, 1, calls["flock"]), (RET, 0, 0, _ENOLCK)]
    prog += _by_argument(calls["fcntl"], 1, [(c, _ENOLCK) for c in F_LOCKS] + [(c, EPERM) for c in F_REFUSED])
    prog += _by_argument(calls["prctl"], 0, [(PR_SET_PDEATHSIG, EPERM), (PR_SET_NAME, EPERM)])
    # execveat(EXEC_FD, "", ..., AT_EMPTY_PATH) only: the descriptor is the flags' check, the path is never read
    prog += [(JEQ, 0, 6, calls["execveat"]), (LD, 0, 0, 16), (JEQ, 0, 3, EXEC_FD), (LD, 0, 0, 48)]
    prog += [(JEQ, 0, 1, AT_EMPTY_PATH), (RET, 0, 0, ALLOW), (RET, 0, 0, EPERM)]
    prog += [(JEQ, 0, 1, nr_clone3), (RET, 0, 0, _ENOSYS), (JEQ, 1, 0, nr_clone), (RET, 0, 0, ALLOW)]
    prog += [(LD, 0, 0, 16), (JSET, 0, 1, CLONE_NAMESPACES), (RET, 0, 0, EPERM)]  # clone's flags (low word)
    prog += [(JSET, 1, 0, CLONE_THREAD), (RET, 0, 0, EPERM), (RET, 0, 0, ALLOW)]
    return prog


def hidden_paths() -> list[str]:
    """Credential files and folders that exist here. None of them is inside the minimal root unless a bound folder
    holds it (a virtual environment inside a home, say); there each is covered by an empty one."""
    home = os.path.expanduser("~")
    names = [".ssh", ".aws", ".gnupg", ".config", ".netrc", ".git-credentials", ".pypirc", ".docker",
             ".cache/huggingface", ".huggingface", ".npmrc"]  # fmt: skip
    paths = [os.path.join(home, n) for n in names] + [
        os.environ.get("HF_HOME", ""),
        os.environ.get("HF_TOKEN_PATH", ""),
    ]
    return [p for p in dict.fromkeys(paths) if p and os.path.lexists(p) and not os.path.islink(p)]


def root_binds() -> list[str]:
    """What the minimal root binds read-only (links are copied as links): ``/usr``, the ``/bin`` and ``/lib``
    folders or links, the linker cache, and the folders of this Python (installation and virtual environment)."""
    system = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc/ld.so.cache", "/etc/localtime"]
    exe_dir = os.path.dirname(os.path.realpath(sys.executable))
    prefixes = [os.path.realpath(p) for p in (sys.base_prefix, sys.prefix)] + [os.path.dirname(exe_dir)]
    paths = [p for p in system if os.path.lexists(p)]
    for p in dict.fromkeys(prefixes):
        if not any(p == s or p.startswith(s.rstrip("/") + "/") for s in paths if os.path.isdir(s)):
            paths.append(p)
    return paths


def _unsafe_bind(paths: list[str]) -> str | None:
    home = os.path.realpath(os.path.expanduser("~"))
    for p in paths:
        if p == "/" or home == p or home.startswith(p.rstrip("/") + "/"):
            return f"the Python installation at {p} holds the home folder; it would be bound into the sandbox"
    return None


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")  # terminal control characters (escapes included)


def _printable(text: str) -> str:
    """The program's text with control characters shown as '?', so that a log or a terminal shows it inertly."""
    return _CONTROL.sub("?", text)


def _tail(data: bytes, chars: int = 300) -> str:
    return _printable(data.decode("utf-8", errors="replace")[-chars:])


# the launcher's report grammar: anything else is not from the launcher and is never shown as a reason
_REPORT_LINE = re.compile(
    r"start|run exit \d{1,3}|run signal \d{1,2}|run timeout|isolation [a-z_ /.]{1,40}: [ -~]{0,240}"
)


def parse_report(data: bytes) -> dict:
    """The verdict in the launcher's report (at most :data:`REPORT_BYTES`, fixed grammar): ``{"stage": "run",
    "status": "exit" | "signal" | "timeout", "code": int}`` or ``{"stage": "isolation", "error": str}``. Never
    raises, whatever the bytes."""
    if len(data) > REPORT_BYTES:
        return {"stage": "isolation", "error": "the launcher's report is too long"}
    lines = data.decode("ascii", errors="replace").splitlines()
    if not lines:
        return {"stage": "isolation", "error": "the launcher ended without a report"}
    if not all(_REPORT_LINE.fullmatch(line) for line in lines):
        return {"stage": "isolation", "error": "the launcher's report is malformed"}
    for line in lines:
        if line.startswith("isolation "):
            return {"stage": "isolation", "error": line.removeprefix("isolation ")}
    last = lines[-1].split()
    if last[0] != "run":
        return {"stage": "isolation", "error": "the launcher's report has no verdict"}
    if last[1] == "timeout":
        return {"stage": "run", "status": "timeout"}
    if "start" not in lines:  # the launcher's setup child ended before the program's first byte
        return {"stage": "isolation", "error": "the sandbox's setup ended before the program started"}
    code = int(last[2])
    return {"stage": "run", "status": last[1], "code": -code if last[1] == "signal" else code}


def _classify(verdict: dict, stderr: bytes) -> tuple[str | None, int | None]:
    """(failure, exit code) from the launcher's verdict and the program's stderr."""
    if verdict.get("stage") == "isolation":
        return "isolation", None
    status, code = verdict.get("status"), verdict.get("code")
    if status == "timeout":
        return "timeout", None
    if status == "signal":
        if code in (-signal.SIGXCPU, -signal.SIGKILL):
            # SIGKILL here comes only from the hard CPU limit (the launcher's own kill is reported as timeout)
            return "cpu_time", code
        return "killed", code
    if code != 0:
        return ("memory" if b"MemoryError" in stderr[-2000:] else "error"), code
    return None, code


def _last_line(stdout: bytes) -> str | None:
    for line in reversed(stdout.decode("utf-8", errors="replace").splitlines()):
        if line.strip():
            return _printable(line.strip()[:MAX_ANSWER_CHARS])
    return None


def run_program(source: str, limits: SandboxLimits | None = None, allow_unisolated: bool = False) -> ProgramResult:
    """Run ``source`` in the sandbox and return how it ended; never raises for anything the program does.

    Raises :class:`SandboxUnavailable` (before running anything) when the namespaces cannot be made here and
    ``allow_unisolated`` is False."""
    limits = limits or SandboxLimits()
    size = len(source.encode("utf-8", errors="replace"))
    if size > limits.program_bytes:
        reason = f"the program is {size:,} bytes; the sandbox takes programs of at most {limits.program_bytes:,}"
        return ProgramResult(None, "too_large", None, 0.0, reason, False)
    if not limits.open_files < EXEC_FD:
        raise ValueError(f"SandboxLimits.open_files must be below {EXEC_FD} (the interpreter's descriptor)")
    reason = isolation_unavailable_reason()
    if reason is not None and not allow_unisolated:
        raise SandboxUnavailable(
            f"sandbox: cannot isolate model-written programs here ({reason}); pass --allow_unisolated_sandbox "
            "(allow_unisolated=True) to run them with limits but with this machine's network and files"
        )
    return _run(source, limits, isolate=reason is None)


def _config(limits: SandboxLimits, isolate: bool, work: str, report_w: int) -> dict:
    machine = platform.machine()
    binds = root_binds()
    return {
        **asdict(limits), "as_bytes": limits.address_space_bytes, "isolate": isolate, "report_fd": report_w,
        "root": work, "binds": binds, "hidden": hidden_paths(), "filter": seccomp_filter(machine),
        "pivot_root": _ARCH[machine][1]["pivot_root"], "namespaces": UNSHARE_FLAGS, "inner_id": INNER_ID,
        "nobody": NOBODY_ID, "root_bytes": ROOT_BYTES, "python": sys.executable, "exec_fd": EXEC_FD,
        "pending_signals": PENDING_SIGNALS, "user_limits": USER_NAMESPACE_LIMITS,
    }  # fmt: skip


def _run(source: str, limits: SandboxLimits, isolate: bool) -> ProgramResult:
    work = tempfile.mkdtemp(prefix="opensir-sandbox-")
    report_r, report_w = os.pipe()
    cfg = _config(limits, isolate, work, report_w)
    start = time.monotonic()
    out, err, rep = bytearray(), bytearray(), bytearray()
    over = False
    proc = None
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", LAUNCHER, json.dumps(cfg)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=work, env={},
            pass_fds=(report_w,), start_new_session=True, close_fds=True,
        )  # fmt: skip
        os.close(report_w)
        report_w = -1
        try:
            proc.stdin.write(source.encode("utf-8", errors="replace"))
            proc.stdin.close()
        except BrokenPipeError:
            pass
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ, out)
        sel.register(proc.stderr, selectors.EVENT_READ, err)
        sel.register(report_r, selectors.EVENT_READ, rep)
        deadline = start + limits.wall_seconds + 5.0  # the launcher keeps the real limit; this is its backstop
        open_streams = 3
        while open_streams and not over:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(timeout=min(left, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    open_streams -= 1
                    continue
                buf = key.data
                if buf is rep and len(rep) > REPORT_BYTES:
                    continue  # read and dropped: the verdict is refused as too long
                buf += chunk
                if buf is not rep and len(buf) > limits.output_bytes:
                    over = True
        sel.close()
    finally:
        if proc is not None:
            if proc.poll() is None:  # ended early: the launcher kills the program's namespace, then itself
                try:
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(timeout=2.0)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    pass
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group; the namespace dies with it
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        if report_w >= 0:
            os.close(report_w)
        os.close(report_r)
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - start
    stdout, stderr = bytes(out[: limits.output_bytes]), bytes(err[: limits.output_bytes])
    if over:
        return ProgramResult(None, "output_limit", None, seconds, _tail(stderr), isolate)
    if not rep and proc.returncode == -signal.SIGKILL:
        verdict = {"stage": "run", "status": "timeout"}  # the backstop killed a launcher that never reported
    else:
        verdict = parse_report(bytes(rep))
    failure, code = _classify(verdict, stderr)
    if failure == "isolation":
        tail = str(verdict.get("error") or "the launcher's setup failed before the program started")
    else:
        tail = _tail(stderr)
    line = _last_line(stdout) if failure is None else None
    if failure is None and line is None:
        failure = "no_output"
    return ProgramResult(line, failure, code, seconds, tail, isolate)


_PROBE: list[str | None] = []  # the probe's settled answer: success, or a failure of the isolation itself


def isolation_unavailable_reason() -> str | None:
    """None when the namespaces can be made here, else the one-line reason. Checked by running a program that must
    see no network, no capability and the minimal root. Only a settled answer (it works, or the isolation itself
    failed) is kept for the process; a probe that timed out or was killed on a busy machine is asked again."""
    if _PROBE:
        return _PROBE[0]
    if not sys.platform.startswith("linux"):
        return f"namespaces need Linux, this is {sys.platform}"
    if platform.machine() not in _ARCH:
        return f"no process filter for the CPU architecture {platform.machine()}"
    unsafe = _unsafe_bind(root_binds())
    if unsafe:
        _PROBE.append(unsafe)
        return unsafe
    check = "import os, socket\nassert os.getuid() != 0 and not os.path.exists('/etc/passwd')\nprint('ok')"
    result = _run(check, SandboxLimits(wall_seconds=PROBE_WALL_SECONDS), isolate=True)
    if result.failure == "isolation":
        _PROBE.append(result.stderr_tail.strip() or "unshare failed")
    elif result.failure is None and result.answer_line == "ok":
        _PROBE.append(None)
    else:
        return f"the isolation check ended as {result.failure}: {result.stderr_tail.strip()[-160:]}"
    return _PROBE[0]
