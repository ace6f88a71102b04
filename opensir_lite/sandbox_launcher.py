"""The sandbox's launcher: run by :mod:`opensir_lite.sandbox` as ``python -I -S sandbox_launcher.py CONFIG``, never
imported. It reads the program from stdin and, before any byte of it runs, builds the namespaces, the minimal
root, the limits, the privilege drop and the system-call filter that CONFIG (JSON) describes.

It never prints to stdout (the program's channel) and reports to the parent only through ``report_fd``, one short
line per fact: ``start`` (written by the program's process just before its execve), ``run exit N``,
``run signal N``, ``run timeout`` or ``isolation STAGE: REASON``. Three processes: L (this one, outside every
namespace) supervises; C enters the namespaces, waits for its child and tells L how it ended; P (PID 1 of the new
PID namespace) builds the minimal root, drops every privilege and becomes the program. Neither L nor C is visible
from P's namespace, and every descriptor but stdout and stderr is closed-on-exec, so nothing of the launcher is
reachable. Standard library only (it runs with ``-S``).
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

cfg: dict = {}  # the configuration (JSON, argv[1]); set by main()
src = b""  # the program's source (stdin); set by main()
libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
libc.syscall.restype = ctypes.c_long
libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
INNER = 1000  # the program's uid and gid in its namespace; cfg["inner_id"] replaces it
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18


def say(text):
    os.write(cfg["report_fd"], text.encode("ascii", "replace")[:300] + b"\n")


class Fail(Exception):
    pass


def err():
    return os.strerror(ctypes.get_errno())


def check(ok, stage):
    if not ok:
        raise Fail(f"{stage}: {err()}")


def mount(source, target, fstype, flags, data=None):
    def enc(s):
        return None if s is None else s.encode()

    check(libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)) == 0, f"mount {target}")


def ro_bind(source, target):
    # bind, then remount read-only keeping the flags the host mount has (a remount may not clear them)
    mount(source, target, None, MS_BIND)
    st = os.statvfs(target)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
    if st.f_flag & os.ST_NOEXEC:
        flags |= MS_NOEXEC
    for st_flag, ms_flag in ((os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21)):
        if st.f_flag & st_flag:
            flags |= ms_flag
    mount(None, target, None, flags)


def seccomp():
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]

    insns = (Insn * len(cfg["filter"]))(*[Insn(*i) for i in cfg["filter"]])
    prog = Prog(len(cfg["filter"]), insns)
    check(libc.prctl(22, 2, ctypes.addressof(prog), 0, 0) == 0, "seccomp")  # PR_SET_SECCOMP, FILTER


def limits():
    # the CPU limit's soft value equals its hard one: the kernel's SIGKILL at exactly cpu_seconds (the program is PID
    # 1 of its namespace, which never receives the soft limit's SIGXCPU)
    cpu = cfg["cpu_seconds"]
    for lim, value in (
        (resource.RLIMIT_CPU, (cpu, cpu)),
        (resource.RLIMIT_SIGPENDING, (cfg["pending_signals"],) * 2),  # queued signals, charged up to the host's user
        (resource.RLIMIT_AS, (cfg["as_bytes"],) * 2),
        (resource.RLIMIT_FSIZE, (cfg["file_bytes"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
        (resource.RLIMIT_NOFILE, (cfg["open_files"],) * 2),
        (resource.RLIMIT_NPROC, (cfg["processes"],) * 2),
        (resource.RLIMIT_MEMLOCK, (0, 0)),
        (resource.RLIMIT_MSGQUEUE, (0, 0)),
    ):
        resource.setrlimit(lim, value)


def drop_privileges(privileged):
    # the bounding set and the securebits first (they need CAP_SETPCAP), then the ids, then every other set
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (EINVAL past the last capability)
    check(libc.prctl(28, 0xEF, 0, 0, 0) == 0, "securebits")  # NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, locked
    if privileged:
        os.setgroups([])
    os.setresgid(INNER, INNER, INNER)
    os.setresuid(INNER, INNER, INNER)
    check(libc.prctl(47, 4, 0, 0, 0) == 0, "ambient capabilities")  # PR_CAP_AMBIENT, CLEAR_ALL
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this process
    data = (ctypes.c_uint32 * 6)()
    check(libc.capset(header, data) == 0, "capset")
    check(libc.prctl(38, 1, 0, 0, 0) == 0, "no_new_privs")  # PR_SET_NO_NEW_PRIVS
    # verify: nothing left in any set, no_new_privs on, the ids unprivileged
    got = (ctypes.c_uint32 * 6)()
    check(libc.capget(header, got) == 0, "capget")
    if any(got) or any(libc.prctl(23, c, 0, 0, 0) == 1 for c in range(64)) or libc.prctl(39, 0, 0, 0, 0) != 1:
        raise Fail("privileges: a capability or the no_new_privs bit is left")
    if os.getresuid() != (INNER,) * 3 or os.getresgid() != (INNER,) * 3:
        raise Fail("privileges: the ids did not change")


def die_with_parent(life):
    check(libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0, "pdeathsig")  # PR_SET_PDEATHSIG
    if life is not None and select.select([life], [], [], 0)[0]:
        os._exit(1)  # the supervisor already died (EOF on the life pipe): do not run unsupervised


def user_namespace_limits():
    # what the kernel counts per user (inotify and fanotify watches, namespaces) is charged up the chain of user
    # namespaces to the user who made this one: this namespace's own limits, written while it is still privileged,
    # keep the program's share of that user's quota at zero. /proc/sys/user shows the caller's user namespace.
    for name, value in cfg["user_limits"].items():
        path = "/proc/sys/user/" + name
        if os.path.exists(path):
            try:
                with open(path, "w") as f:
                    f.write(str(value))
            except OSError as e:
                raise Fail(f"user limits: {name}: {e.strerror}") from None


def dev_bind(name, target):
    # the device node read-only: writes to the device still work, but not to its inode (times, mode)
    mount(f"/dev/{name}", target, None, MS_BIND)
    flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC
    st = os.statvfs(target)
    for st_flag, ms_flag in ((os.ST_NOATIME, 1024), (os.ST_NODIRATIME, 2048), (os.ST_RELATIME, 1 << 21)):
        if st.f_flag & st_flag:
            flags |= ms_flag
    mount(None, target, None, flags)


def build_root(root):
    user_namespace_limits()
    check(libc.sethostname(b"sandbox", 7) == 0, "hostname")  # the host's name is not the program's to read
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("sandbox", root, "tmpfs", MS_NOSUID | MS_NODEV, f"size={cfg['root_bytes']},nr_inodes=512,mode=0755")
    for path in cfg["binds"]:
        target = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        elif os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
            ro_bind(path, target)
        elif os.path.isfile(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
            ro_bind(path, target)
    for secret in cfg["hidden"]:  # credentials inside a bound folder: covered by an empty one
        target = root + secret
        if os.path.isdir(target):
            mount("sandbox", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4096,mode=0500")
        elif os.path.isfile(target):
            dev_bind("null", target)
    os.makedirs(root + "/dev")
    for dev in ("null", "zero", "random", "urandom"):
        open(f"{root}/dev/{dev}", "w").close()
        dev_bind(dev, f"{root}/dev/{dev}")
    os.makedirs(root + "/sandbox")  # nothing written there can be executed
    mount(
        "sandbox",
        root + "/sandbox",
        "tmpfs",
        MS_NOSUID | MS_NODEV | MS_NOEXEC,
        f"size={cfg['file_bytes']},nr_inodes=64,mode=0700,uid={INNER},gid={INNER}",
    )
    # no /proc: the mount table (the binds' host paths), load, memory, the kernel's command line stay outside
    os.makedirs(root + "/.old")
    check(libc.syscall(cfg["pivot_root"], (root).encode(), (root + "/.old").encode()) == 0, "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/.old", 2) == 0, "umount old root")  # MNT_DETACH
    os.rmdir("/.old")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def program(status_w, life, isolated, privileged):
    # P: everything before execve is this launcher's code; the program's first byte runs after it
    try:
        os.setsid()
        if isolated:
            build_root(cfg["root"])
            work = "/sandbox"
        else:
            work = cfg["root"]
        with open(os.path.join(work, "main.py"), "wb") as f:
            f.write(src)
        os.chmod(os.path.join(work, "main.py"), 0o644)
        os.chdir(work)
        null = os.open("/dev/null", os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        # the interpreter is executed from a descriptor numbered above the open-files limit: the filter allows only
        # that execveat, so the program (which cannot open a descriptor that high) can execute nothing
        exe = os.open(cfg["python"], os.O_PATH | os.O_CLOEXEC)
        os.dup2(exe, cfg["exec_fd"], inheritable=False)
        os.close(exe)
        limits()
        if isolated:
            drop_privileges(privileged)
        else:
            check(libc.prctl(38, 1, 0, 0, 0) == 0, "no_new_privs")
        die_with_parent(life)
        seccomp()
        os.write(status_w, b"start\n")  # the last launcher byte: status_w is closed by the execve
        os.execve(cfg["exec_fd"], [cfg["python"], "-I", "-B", "main.py"], {})
    except Fail as e:
        os.write(status_w, f"isolation {e}".encode()[:280] + b"\n")
    except OSError as e:
        os.write(status_w, f"isolation setup: {e.strerror or e}".encode()[:280] + b"\n")
    except BaseException as e:  # never fall back into the supervisor's code as a second supervisor
        os.write(status_w, f"isolation setup: {type(e).__name__}".encode()[:280] + b"\n")
    os._exit(127)


RUNNING = {}  # L's processes to end when the parent asks (SIGTERM): C, and P once C has reported its pid


def end_on_request(signum, frame):
    # the parent ends the call early (an output flood, its own deadline): end the namespace first, then L
    for pid in (RUNNING.get("program"), RUNNING.get("child")):
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    if RUNNING.get("group"):  # unisolated: the program's own session and group
        try:
            os.killpg(RUNNING["group"], signal.SIGKILL)
        except OSError:
            pass
    os._exit(0)


def supervise(child, status_r, first_pid):
    # L: read C's lines until EOF, the wall-clock limit ends the namespace; returns the verdict lines
    deadline = time.monotonic() + cfg["wall_seconds"]
    lines, buf, target, timed_out = [], b"", first_pid, False
    RUNNING["child"] = child
    while True:
        left = deadline - time.monotonic()
        if left <= 0 and not timed_out:
            timed_out = True
            os.kill(target or child, signal.SIGKILL)  # PID 1 of the namespace: the kernel kills the rest
            deadline = time.monotonic() + 2.0
            continue
        if left <= 0:
            os.kill(child, signal.SIGKILL)
            break
        if not select.select([status_r], [], [], min(left, 0.5))[0]:
            continue
        chunk = os.read(status_r, 4096)
        if not chunk:
            break
        buf += chunk
        *done, buf = buf.split(b"\n")
        for line in done:
            text = line.decode("ascii", "replace")
            if text.startswith("pid "):
                target = RUNNING["program"] = int(text[4:])
            else:
                lines.append(text)
    os.waitpid(child, 0)
    return ["run timeout"] if timed_out else lines


def isolated():
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    status_r, status_w = os.pipe()
    me = os.getpid()
    c = os.fork()
    if c == 0:  # C
        os.close(ready_r)
        os.close(go_w)
        os.close(status_r)
        try:
            check(libc.unshare(cfg["namespaces"]) == 0, "unshare")
            check(libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0, "pdeathsig")
            if os.getppid() != me:
                os._exit(1)
            os.write(ready_w, b"r")
            mode = os.read(go_r, 1)
            if mode not in (b"p", b"u"):
                raise Fail("uid map: the supervisor wrote none")
            life_r, life_w = os.pipe()  # P sees EOF on it if C is gone
            p = os.fork()
            if p == 0:
                os.close(life_w)
                program(status_w, life_r, True, mode == b"p")
            os.close(life_r)
            os.write(status_w, f"pid {p}\n".encode())
            _, st = os.waitpid(p, 0)
            code = f"signal {os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit {os.WEXITSTATUS(st)}"
            os.write(status_w, f"run {code}\n".encode())
        except Fail as e:
            os.write(status_w, f"isolation {e}".encode()[:280] + b"\n")
        except BaseException as e:  # never fall back into the supervisor's code
            os.write(status_w, f"isolation setup: {type(e).__name__}".encode()[:280] + b"\n")
        os._exit(0)
    os.close(ready_w)
    os.close(go_r)
    os.close(status_w)
    if os.read(ready_r, 1) == b"r":
        mode = b"p"
        uid, gid = os.geteuid(), os.getegid()
        try:  # privileged: the program is the host's unprivileged "nobody" id, the setup root of the namespace
            for name, text in (
                ("uid_map", f"0 {uid} 1\n{INNER} {cfg['nobody']} 1"),
                ("gid_map", f"0 {gid} 1\n{INNER} {cfg['nobody']} 1"),
            ):
                with open(f"/proc/{c}/{name}", "w") as f:
                    f.write(text)
        except OSError:  # an ordinary user may map only its own ids
            mode = b"u"
            try:
                for name, text in (
                    ("setgroups", "deny"),
                    ("uid_map", f"{INNER} {uid} 1"),
                    ("gid_map", f"{INNER} {gid} 1"),
                ):
                    with open(f"/proc/{c}/{name}", "w") as f:
                        f.write(text)
            except OSError as e:
                say(f"isolation uid map: {e.strerror}")
                mode = b"x"
        os.write(go_w, mode)
    os.close(go_w)
    return supervise(c, status_r, None)


def unisolated():
    status_r, status_w = os.pipe()
    p = os.fork()
    if p == 0:
        os.close(status_r)
        program(status_w, None, False, False)
    os.close(status_w)
    RUNNING["group"] = p
    deadline = time.monotonic() + cfg["wall_seconds"]
    while True:
        got, st = os.waitpid(p, os.WNOHANG)
        if got:
            break
        if time.monotonic() > deadline:
            os.killpg(p, signal.SIGKILL)
            os.waitpid(p, 0)
            return ["run timeout"]
        time.sleep(0.005)
    lines = os.read(status_r, 4096).decode("ascii", "replace").splitlines()
    code = f"signal {os.WTERMSIG(st)}" if os.WIFSIGNALED(st) else f"exit {os.WEXITSTATUS(st)}"
    return lines + [f"run {code}"]


def main():
    global cfg, src, INNER
    cfg = json.loads(sys.argv[1])
    os.set_inheritable(cfg["report_fd"], False)
    INNER = cfg["inner_id"]
    src = sys.stdin.buffer.read()
    signal.signal(signal.SIGTERM, end_on_request)
    for line in isolated() if cfg["isolate"] else unisolated():
        say(line)
    os._exit(0)


if __name__ == "__main__":
    main()
