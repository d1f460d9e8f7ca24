"""Getting a machine ready, and describing it: redis tools from apt, a release build of shoal and
shoal-loadgen, and the date/machine/version lines at the top of every report."""

import os
import platform
import shutil
import subprocess

from .context import log

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = os.path.dirname(BENCH_DIR)
REDIS_TOOLS = ("redis-server", "redis-benchmark", "redis-cli")


class SetupError(Exception):
    """The machine cannot run the benchmark (missing tools, failed build)."""


def ensure_redis_tools(install: bool) -> None:
    missing = [t for t in REDIS_TOOLS if not shutil.which(t)]
    if not missing:
        return
    if not install:
        raise SetupError(f"missing {', '.join(missing)} (run without --no-install to apt-get them)")
    if not shutil.which("apt-get"):
        raise SetupError(f"missing {', '.join(missing)} and no apt-get to install them with")
    sudo = [] if os.geteuid() == 0 else (["sudo"] if shutil.which("sudo") else None)
    if sudo is None:
        raise SetupError(f"missing {', '.join(missing)}; installing them needs root or sudo")
    log(f"installing redis-server and redis-tools (missing: {', '.join(missing)})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update"], ["apt-get", "install", "-y", "redis-server", "redis-tools"]):
        if subprocess.run(sudo + argv, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise SetupError(f"`{' '.join(argv)}` failed")
    still = [t for t in REDIS_TOOLS if not shutil.which(t)]
    if still:
        raise SetupError(f"still missing after apt-get: {', '.join(still)}")


def target_dir() -> str:
    # cargo resolves a relative CARGO_TARGET_DIR against its working directory, which is REPO here.
    return os.path.join(REPO, os.environ.get("CARGO_TARGET_DIR", "target"))


def cargo() -> str:
    found = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.path.exists(found):
        raise SetupError("cargo not found: install Rust with rustup (https://rustup.rs); "
                         "Debian's packaged cargo is too old for this workspace")
    return found


def build(packages: list[str]) -> None:
    argv = [cargo(), "build", "--release"] + [arg for p in packages for arg in ("-p", p)]
    log("building: " + " ".join(argv[1:]))
    # cargo's progress goes to stderr, like all of the harness's own progress: stdout is the report.
    if subprocess.run(argv, cwd=REPO, stdout=subprocess.DEVNULL).returncode != 0:
        raise SetupError(f"`{' '.join(argv)}` failed")


def _output(argv: list[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10, cwd=REPO)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def os_name() -> str:
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.system()


def memory_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
        return f"{kb / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def git_revision() -> str:
    commit = _output(["git", "rev-parse", "--short=12", "HEAD"]) or "no commit"
    dirty = _output(["git", "status", "--porcelain", "--untracked-files=no"])
    return commit + (" (uncommitted changes)" if dirty else "")


def versions(shoal_bin: str, shoal_style: str, redis_bin: str, redis_benchmark: str) -> dict[str, str]:
    if shoal_style == "redis":
        shoal = f"{shoal_bin}: {_output([shoal_bin, '--version']) or '?'} — standing in for shoal (harness test)"
    else:
        shoal = f"{_output([shoal_bin, '--version']) or 'shoal (no --version)'} at {shoal_bin}, git {git_revision()}"
    return {
        "shoal": shoal,
        "redis-server": _output([redis_bin, "--version"]) or "?",
        "redis-benchmark": _output([redis_benchmark, "--version"]) or "?",
        "rustc": _output(["rustc", "--version"]) or "?",
    }


def load_average() -> str:
    """The 1-minute load average: other work on the machine skews every number, tails most."""
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except (OSError, IndexError):
        return "?"


def machine() -> str:
    return (f"nproc {len(os.sched_getaffinity(0))}, {cpu_model()}, {memory_total()} RAM, {os_name()}, "
            f"Linux {platform.release()}, Python {platform.python_version()}")
