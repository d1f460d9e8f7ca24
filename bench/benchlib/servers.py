"""Server processes under test and the external tools that load them.

Every child runs in its own process group (so a kill reaches anything it spawned) and gets
PR_SET_PDEATHSIG, so servers die with the harness even if it is killed with SIGKILL and never
reaches its cleanup. `Fleet` remembers every server it started; `Fleet.stop_all()` in a `finally`
stops them whatever happened.
"""

import ctypes
import itertools
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from .resp import Client, ReplyError, parse_info

CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
PR_SET_PDEATHSIG = 1
# Every start gets its own run directory, so nothing one server leaves on disk (a replica's synced
# dump.rdb, say) is found by a later one at start-up.
_RUN_IDS = itertools.count(1)


class ServerError(Exception):
    """A server did not start, died, or misbehaved on a control command."""


class ToolError(Exception):
    """An external tool (redis-benchmark, redis-cli, shoal-loadgen) failed or timed out."""


def _die_with_parent():
    # Runs in the child between fork and exec. Only async-signal-safe work belongs here;
    # a prctl call is.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    """A loopback port that was free a moment ago. The server could lose a race for it; start()
    then fails with a clear message rather than measuring something else."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class ServerSpec:
    """How to start one server. `style` is the command-line dialect: "shoal" or "redis"."""

    label: str  # how results name it: "shoal", "redis", "redis-lru", ...
    binary: str
    style: str
    maxmemory: int | None = None
    policy: str | None = None
    threads: int | None = None
    # Further configuration as (name, value) pairs: `--name value` for redis, `--set name=value` for shoal.
    config: tuple[tuple[str, str], ...] = ()

    def argv(self, port: int, workdir: str) -> list[str]:
        if self.style == "redis":
            argv = [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                    "--appendonly", "no", "--dir", workdir, "--daemonize", "no", "--logfile", ""]
            if self.maxmemory is not None:
                argv += ["--maxmemory", str(self.maxmemory)]
            if self.policy:
                argv += ["--maxmemory-policy", self.policy]
            if self.threads:
                argv += ["--io-threads", str(self.threads)]
            for name, value in self.config:
                argv += [f"--{name}", value]
            return argv
        argv = [self.binary, "serve", "--port", str(port), "--bind", "127.0.0.1"]
        if self.maxmemory is not None:
            argv += ["--maxmemory", str(self.maxmemory)]
        if self.policy:
            argv += ["--maxmemory-policy", self.policy]
        if self.threads:
            argv += ["--threads", str(self.threads)]
        for name, value in self.config:
            argv += ["--set", f"{name}={value}"]
        return argv


class Server:
    def __init__(self, spec: ServerSpec, workdir: str):
        self.spec = spec
        self.label = spec.label
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self) -> "Server":
        self.starts += 1
        self.port = free_port()
        rundir = os.path.join(self.workdir, f"{self.label}-{next(_RUN_IDS)}")
        os.makedirs(rundir, exist_ok=True)
        self.log_path = os.path.join(rundir, "server.log")
        argv = self.spec.argv(self.port, rundir)
        with open(self.log_path, "wb") as log:
            try:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             cwd=rundir, start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as e:
                raise ServerError(f"{self.label}: cannot run {argv[0]}: {e}") from e
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"{self.label}: exited with code {self.proc.returncode} at start-up"
                                  f" ({' '.join(argv)}){self.log_tail()}")
            try:
                with Client("127.0.0.1", self.port, timeout=1.0) as c:
                    if c.command("PING") == "PONG":
                        return self
            except (OSError, ReplyError):
                pass
            time.sleep(0.05)
        self.kill()
        raise ServerError(f"{self.label}: no PONG within {READY_TIMEOUT_S:.0f}s ({' '.join(argv)}){self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            code = self.proc.returncode if self.proc else None
            raise ServerError(f"{self.label}: server exited (code {code}){self.log_tail()}")

    def ensure_running(self) -> None:
        """Restarts a server that died, so one crash fails one run instead of every later one."""
        if not self.alive():
            self.start()

    def log_tail(self, lines: int = 8) -> str:
        try:
            with open(self.log_path, "rb") as f:
                tail = f.read()[-4000:].decode(errors="replace").splitlines()[-lines:]
        except (OSError, AttributeError):
            return ""
        return ("; log: " + " | ".join(t.strip() for t in tail)) if tail else ""

    def client(self, timeout: float = 10.0) -> Client:
        return Client("127.0.0.1", self.port, timeout=timeout)

    def command(self, *args):
        try:
            with self.client() as c:
                return c.command(*args)
        except OSError as e:
            raise ServerError(f"{self.label}: {' '.join(map(str, args))}: {e}") from e

    def info(self, section: str) -> dict[str, str]:
        reply = self.command("INFO", section)
        if not isinstance(reply, (bytes, str)):
            raise ServerError(f"{self.label}: INFO {section} returned {reply!r}")
        return parse_info(reply)

    def used_memory(self) -> int:
        fields = self.info("memory")
        if "used_memory" not in fields:
            raise ServerError(f"{self.label}: INFO memory has no used_memory field")
        return int(fields["used_memory"])

    def key_count(self) -> int | None:
        """Keys in db0 from INFO keyspace, or None if the server does not report it."""
        try:
            db0 = self.info("keyspace").get("db0")
        except (ServerError, ReplyError):
            return None
        if db0 is None:
            return 0
        fields = dict(part.split("=", 1) for part in db0.split(",") if "=" in part)
        return int(fields["keys"]) if fields.get("keys", "").isdigit() else None

    def cpu_seconds(self) -> float:
        """User + system CPU of the whole process (all threads), from /proc/PID/stat."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                stat = f.read()
        except OSError as e:
            raise ServerError(f"{self.label}: cannot read CPU time: {e}") from e
        # The command name (field 2) may contain spaces; fields after it start at ") ".
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])
        return (utime + stime) / CLK_TCK

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise ServerError(f"{self.label}: no VmRSS in /proc/{self.pid}/status")

    def stop(self) -> None:
        """SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL to the process group, each with a time bound."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                with Client("127.0.0.1", self.port, timeout=2.0) as c:
                    c.command("SHUTDOWN", "NOSAVE")
            except (OSError, ReplyError):
                pass  # a server that shuts down closes the connection instead of replying
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, STOP_TIMEOUT_S)):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass  # the group is gone already
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # The leader is reaped; make sure nothing it spawned outlived it.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


class Fleet:
    """Starts servers and remembers them, so one `stop_all()` cleans up after any failure."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.servers: list[Server] = []

    def start(self, spec: ServerSpec) -> Server:
        server = Server(spec, self.workdir)
        self.servers.append(server)
        return server.start()

    def stop(self, server: Server | None) -> None:
        if server is not None:
            server.stop()
            if server in self.servers:
                self.servers.remove(server)

    def stop_all(self) -> None:
        while self.servers:
            self.servers.pop().stop()


@dataclass
class ToolRun:
    code: int
    stdout: str
    stderr: str
    seconds: float


def run_tool(argv: list[str], timeout: float, stdin_path: str | None = None, check: bool = True) -> ToolRun:
    """Runs a tool to completion in its own process group, killing the group if it overruns."""
    started = time.monotonic()
    stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(argv, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True, preexec_fn=_die_with_parent)
    except OSError as e:
        raise ToolError(f"cannot run {argv[0]}: {e}") from e
    finally:
        if stdin_path:
            stdin.close()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise ToolError(f"{os.path.basename(argv[0])} timed out after {timeout:.0f}s") from None
    except BaseException:
        _kill_group(proc)  # e.g. Ctrl-C: the tool must not outlive the harness
        raise
    run = ToolRun(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"), time.monotonic() - started)
    if check and proc.returncode != 0:
        detail = (run.stderr.strip() or run.stdout.strip())[-600:]
        raise ToolError(f"{os.path.basename(argv[0])} exited with code {proc.returncode}: {detail}")
    return run


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.communicate()
