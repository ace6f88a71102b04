"""A sandbox for model-written Python: one program, one child process, no network, hard limits, one line back.

:func:`run_program` starts ``python -I`` on a small launcher (:data:`_LAUNCHER`) with an empty environment in an
empty temporary folder. The launcher reads the program from its stdin, then, before any of it runs:

- enters new user, mount, network and PID namespaces (``unshare(2)`` through libc): the program has no network
  interface but a loopback that is down, sees only its own processes (a fresh ``/proc``), holds no capability
  outside, and every process it starts dies with it (the kernel ends a PID namespace with its first process);
- remounts every file system read-only (inside its mount namespace only) and gives the program a small empty
  ``tmpfs`` as its working folder, so it can write nowhere else;
- sets the limits: CPU seconds, address space, processes (counted in its own user namespace), file size, open
  files, no core files; the launcher keeps a wall-clock limit and kills the namespace when it passes.

The parent reads at most ``output_bytes`` of stdout and stderr (more ends the program as ``output_limit``), takes
only the **last non-empty line of stdout** as text, and never imports, unpickles or evaluates anything the program
produced. How the program ended comes from the launcher on a separate pipe the program cannot write to.

Where the namespaces cannot be made (a container without user namespaces, some CI runners), :func:`run_program`
raises :class:`SandboxUnavailable`, one line naming why, unless the caller passes ``allow_unisolated=True``: then the
program runs with the limits, the empty environment and the empty folder, but *with* the host's network and file
system. Nothing else in the package imports this module except :mod:`opensir_lite.programs`.
"""

from __future__ import annotations

import json
import os
import platform
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

# How a program ended (ProgramResult.failure); None means it exited 0 and printed a line.
FAILURES = (
    "timeout",  # the wall-clock limit passed
    "cpu_time",  # RLIMIT_CPU (SIGXCPU / SIGKILL)
    "memory",  # MemoryError or the address-space limit
    "output_limit",  # more than output_bytes on stdout or stderr
    "error",  # any other non-zero exit (an exception, a syntax error)
    "killed",  # ended by another signal
    "no_output",  # exited 0 without printing a non-empty line
    "isolation",  # the namespaces could not be made inside the launcher
)


MAX_ANSWER_CHARS = 200  # the answer line is cut to this length


class SandboxUnavailable(RuntimeError):
    """The namespaces cannot be made on this machine; the message is one line naming why and the opt-in."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program (every program of the project is a few lines of arithmetic)."""

    cpu_seconds: int = 2  # RLIMIT_CPU: CPU time; a program that computes an answer needs milliseconds
    wall_seconds: float = 5.0  # killed after this long, whatever it is doing (sleeping, blocked, spinning)
    memory_bytes: int = 512 * 2**20  # RLIMIT_AS: address space; Python with sympy imported needs about 150 MiB
    output_bytes: int = 64 * 2**10  # stdout and stderr each; more ends it as output_limit
    file_bytes: int = 2**20  # RLIMIT_FSIZE, and the size of its tmpfs working folder
    open_files: int = 64  # RLIMIT_NOFILE


@dataclass(frozen=True)
class ProgramResult:
    """How one program ended. ``answer_line`` is the last non-empty stdout line (None on failure)."""

    answer_line: str | None
    failure: str | None  # one of FAILURES, None when the program exited 0 with a line
    exit_code: int | None  # the program's exit status, or -signal; None when it never started
    seconds: float  # wall-clock, launcher included
    stderr_tail: str  # the last 300 characters of stderr, for a reader; never parsed for an answer
    isolated: bool  # ran inside the namespaces

    @property
    def ok(self) -> bool:
        return self.failure is None

    def to_dict(self) -> dict:
        return asdict(self)


# The launcher runs in the child with `python -I -S -c`. It must not print to stdout (the program's channel); it
# reports how the program ended as one JSON line on the fd ``report_fd``, which it closes before the program starts.
_LAUNCHER = r"""
import ctypes, json, os, resource, signal, sys, time
cfg = json.loads(sys.argv[1])
report = os.fdopen(cfg["report_fd"], "w")
def done(**kw):
    report.write(json.dumps(kw) + "\n"); report.flush(); os._exit(0)
src = sys.stdin.buffer.read()
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
def err():
    return os.strerror(ctypes.get_errno())
def mount(src_, target, fstype, flags, data=None):
    enc = lambda s: None if s is None else s.encode()
    if libc.mount(enc(src_), enc(target), enc(fstype), flags, enc(data)) != 0:
        raise OSError(f"mount {target}: {err()}")
work = os.getcwd()
if cfg["isolate"]:
    uid, gid = os.getuid(), os.getgid()
    # CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID
    if libc.unshare(0x10000000 | 0x00020000 | 0x40000000 | 0x20000000) != 0:
        done(stage="isolation", error="unshare: " + err())
    try:
        for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
            with open(f"/proc/self/{name}", "w") as f:
                f.write(text)
        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = (
            1, 2, 4, 8, 32, 1024, 2048, 4096)
        MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        points = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                p = line.split()[4]
                for esc, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
                    p = p.replace(esc, ch)
                points.append(p)
        for p in sorted(set(points), key=len):
            if p == "/proc" or p.startswith("/proc/"):
                continue  # replaced by a fresh proc below
            try:
                st = os.statvfs(p)
            except OSError:
                continue  # hidden under another mount
            if st.f_flag & os.ST_RDONLY:
                continue
            flags = MS_REMOUNT | MS_BIND | MS_RDONLY
            for st_flag, ms_flag in ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
                                     (os.ST_NOATIME, MS_NOATIME), (os.ST_NODIRATIME, MS_NODIRATIME),
                                     (os.ST_RELATIME, MS_RELATIME)):
                if st.f_flag & st_flag:
                    flags |= ms_flag
            mount(None, p, None, flags)
        for secret in cfg["hidden"]:  # credentials the program has no business reading
            if os.path.isdir(secret):
                mount("sandbox", secret, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4096,mode=0500")
            elif os.path.isfile(secret):
                mount("/dev/null", secret, None, MS_BIND)
        mount("sandbox", work, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['file_bytes']},mode=0700,nr_inodes=64")
    except OSError as e:
        done(stage="isolation", error=str(e))
pid = os.fork()
if pid == 0:
    try:
        libc.prctl(1, signal.SIGKILL, None, 0, 0)  # PR_SET_PDEATHSIG: the program dies with the launcher
        if cfg["isolate"]:
            try:
                mount("proc", "/proc", "proc", 2 | 4 | 8)
            except OSError:
                mount("sandbox", "/proc", "tmpfs", 2 | 4 | 8, "size=4096,mode=0555")
        os.chdir(work)
        with open("main.py", "wb") as f:
            f.write(src)
        cpu, mem = cfg["cpu_seconds"], cfg["memory_bytes"]
        for lim, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
                           (resource.RLIMIT_FSIZE, (cfg["file_bytes"],) * 2), (resource.RLIMIT_CORE, (0, 0)),
                           (resource.RLIMIT_NOFILE, (cfg["open_files"],) * 2)):
            resource.setrlimit(lim, value)
        if cfg["seccomp"]:
            # one process: fork, vfork and clone without CLONE_THREAD fail with EPERM, clone3 with ENOSYS (callers
            # fall back to clone); other ABIs (32-bit, x32) get EPERM for everything
            arch, nr_fork, nr_vfork, nr_clone = cfg["seccomp"]
            ALLOW, EPERM, ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38
            LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
            prog = [
                (LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, EPERM),
                (LD, 0, 0, 0), (JGE, 0, 1, 0x40000000), (RET, 0, 0, EPERM),
                (JEQ, 0, 1, nr_fork), (RET, 0, 0, EPERM),
                (JEQ, 0, 1, nr_vfork), (RET, 0, 0, EPERM),
                (JEQ, 0, 1, 435), (RET, 0, 0, ENOSYS),
                (JEQ, 1, 0, nr_clone), (RET, 0, 0, ALLOW),
                (LD, 0, 0, 16), (JSET, 1, 0, 0x00010000), (RET, 0, 0, EPERM), (RET, 0, 0, ALLOW),
            ]

            class Insn(ctypes.Structure):
                _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                            ("k", ctypes.c_uint)]

            class Prog(ctypes.Structure):
                _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

            insns = (Insn * len(prog))(*[Insn(*i) for i in prog])
            fprog = Prog(len(prog), insns)
            if libc.prctl(38, 1, None, 0, 0) != 0 or libc.prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:
                raise OSError("seccomp: " + err())
        report.close()
        os.execve(sys.executable, [sys.executable, "-I", "-B", "main.py"], {})
    except BaseException as e:  # noqa: BLE001
        if not report.closed:
            report.write(json.dumps({"stage": "isolation", "error": str(e)}) + "\n")
            report.flush()
    os._exit(127)
deadline = time.monotonic() + cfg["wall_seconds"]
while True:
    got, status = os.waitpid(pid, os.WNOHANG)
    if got:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        done(stage="run", status="timeout")
    time.sleep(0.005)
if os.WIFSIGNALED(status):
    done(stage="run", status="signal", code=-os.WTERMSIG(status))
done(stage="run", status="exit", code=os.WEXITSTATUS(status))
"""


# (audit arch, fork, vfork, clone) system call numbers for the seccomp filter; aarch64 has no fork or vfork
_NONE = 0xFFFFFFFF
_SECCOMP_ARCH = {"x86_64": (0xC000003E, 57, 58, 56), "aarch64": (0xC00000B7, _NONE, _NONE, 220)}


def hidden_paths() -> list[str]:
    """Credential files and folders that exist here; inside the sandbox each is replaced by an empty one."""
    home = os.path.expanduser("~")
    names = [".ssh", ".aws", ".gnupg", ".config", ".netrc", ".git-credentials", ".pypirc", ".docker",
             ".cache/huggingface", ".huggingface"]  # fmt: skip
    paths = [os.path.join(home, n) for n in names] + [
        os.environ.get("HF_HOME", ""),
        os.environ.get("HF_TOKEN_PATH", ""),
    ]
    return [p for p in dict.fromkeys(paths) if p and os.path.lexists(p) and not os.path.islink(p)]


def _tail(data: bytes, chars: int = 300) -> str:
    return data.decode("utf-8", errors="replace")[-chars:]


def _classify(verdict: dict, stdout: bytes, stderr: bytes, limits: SandboxLimits) -> tuple[str | None, int | None]:
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
            return line.strip()[:MAX_ANSWER_CHARS]
    return None


def run_program(source: str, limits: SandboxLimits | None = None, allow_unisolated: bool = False) -> ProgramResult:
    """Run ``source`` in the sandbox and return how it ended; never raises for anything the program does.

    Raises :class:`SandboxUnavailable` (before running anything) when the namespaces cannot be made here and
    ``allow_unisolated`` is False."""
    limits = limits or SandboxLimits()
    reason = isolation_unavailable_reason()
    if reason is not None and not allow_unisolated:
        raise SandboxUnavailable(
            f"sandbox: cannot isolate model-written programs here ({reason}); pass --allow_unisolated_sandbox "
            "(allow_unisolated=True) to run them with limits but with this machine's network and files"
        )
    return _run(source, limits, isolate=reason is None)


def _run(source: str, limits: SandboxLimits, isolate: bool) -> ProgramResult:
    work = tempfile.mkdtemp(prefix="opensir-sandbox-")
    report_r, report_w = os.pipe()
    cfg = {**asdict(limits), "isolate": isolate, "report_fd": report_w, "hidden": hidden_paths(),
           "seccomp": _SECCOMP_ARCH.get(platform.machine())}  # fmt: skip
    start = time.monotonic()
    out, err, rep = bytearray(), bytearray(), bytearray()
    over = False
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _LAUNCHER, json.dumps(cfg)],
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
                buf += chunk
                if buf is not rep and len(buf) > limits.output_bytes:
                    over = True
        sel.close()
        if over or open_streams:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher; the program dies with it (PR_SET_PDEATHSIG)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    finally:
        if report_w >= 0:
            os.close(report_w)
        os.close(report_r)
        shutil.rmtree(work, ignore_errors=True)
    seconds = time.monotonic() - start
    stdout, stderr = bytes(out[: limits.output_bytes]), bytes(err[: limits.output_bytes])
    if over:
        return ProgramResult(None, "output_limit", None, seconds, _tail(stderr), isolate)
    try:
        lines = [json.loads(line) for line in bytes(rep).decode().splitlines()]
        verdict = next((v for v in lines if v.get("stage") == "isolation"), lines[-1])
    except (ValueError, IndexError, AttributeError):
        # the launcher never reported: killed by the backstop, or it failed before the program could start
        verdict = (
            {"stage": "run", "status": "timeout"}
            if proc.returncode == -signal.SIGKILL
            else {"stage": "isolation", "error": "the launcher failed: " + _tail(stderr, 160).strip()}
        )
    failure, code = _classify(verdict, stdout, stderr, limits)
    tail = _tail(stderr) if failure != "isolation" else str(verdict.get("error", ""))
    line = _last_line(stdout) if failure is None else None
    if failure is None and line is None:
        failure = "no_output"
    return ProgramResult(line, failure, code, seconds, tail, isolate)


@lru_cache(maxsize=1)
def isolation_unavailable_reason() -> str | None:
    """None when the namespaces can be made here, else the one-line reason (checked once per process by running
    a program that must see no network and a read-only file system)."""
    if not sys.platform.startswith("linux"):
        return f"namespaces need Linux, this is {sys.platform}"
    if platform.machine() not in _SECCOMP_ARCH:
        return f"no process filter for the CPU architecture {platform.machine()}"
    result = _run("print('ok')", SandboxLimits(), isolate=True)
    if result.failure == "isolation":
        return result.stderr_tail.strip() or "unshare failed"
    if result.failure is not None:
        return f"the isolation check ended as {result.failure}: {result.stderr_tail.strip()[-160:]}"
    return None
