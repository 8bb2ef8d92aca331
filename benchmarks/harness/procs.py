"""Server processes: start in their own process group, stop the whole group, read /proc.

CPU per request and RSS come from /proc of the server's process tree (the process we started
and every descendant: uvicorn workers, MLServer's children), not from the servers' own words.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import resource
import signal
import subprocess
import time
from collections.abc import Callable, Iterable

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """``root`` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """utime + stime of each live process, in seconds."""
    out = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            out[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds spent between two readings (processes born in between count from 0)."""
    return sum(value - before.get(pid, 0.0) for pid, value in after.items())


def rss_mib(pids: Iterable[int]) -> dict[int, float]:
    """Resident set size of each live process, in MiB."""
    out = {}
    for pid in pids:
        try:
            resident = int(pathlib.Path(f"/proc/{pid}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        out[pid] = resident * PAGE_SIZE / 2**20
    return out


def role(pid: int, root: int) -> str:
    """What a process of a server's tree is: main, worker or a helper."""
    if pid == root:
        return "main"
    try:
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return "gone"
    if b"resource_tracker" in cmdline:
        return "resource-tracker"
    if b"forkserver" in cmdline:
        return "forkserver"
    return "worker"


def memory(root: int) -> list[tuple[int, str, float]]:
    """(pid, role, RSS MiB) of every process of the tree, largest first."""
    tree = process_tree(root)
    return sorted(
        ((pid, role(pid, root), mib) for pid, mib in rss_mib(tree).items()),
        key=lambda entry: -entry[2],
    )


def worker_rss(entries: list[tuple[int, str, float]]) -> float:
    """RSS of the largest worker (of the main process when the server has no workers)."""
    workers = [mib for _, kind, mib in entries if kind == "worker"]
    if workers:
        return max(workers)
    return max((mib for _, kind, mib in entries if kind == "main"), default=float("nan"))


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (from /proc/stat)."""
    fields = pathlib.Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


def children_cpu_seconds() -> float:
    """CPU seconds of this process's finished children (wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def loadavg() -> str:
    return " ".join(pathlib.Path("/proc/loadavg").read_text().split()[:3])


class SharedMachine:
    """Waits out other people's load on this machine, within a time budget (``patience``).

    ``roots``: the process trees that are ours (with this process), left out of the count.
    """

    def __init__(
        self, roots: list[int], threshold: float, patience: float, say: Callable[[str], None]
    ) -> None:
        self.roots = roots
        self.threshold = threshold
        self.left = patience
        self.say = say

    def others_now(self, seconds: float = 0.5) -> float:
        """Cores taken by processes not ours over ``seconds``."""
        pids = [pid for root in self.roots for pid in process_tree(root)]
        cpu, busy, own = cpu_seconds(pids), machine_busy_seconds(), time.process_time()
        began = time.monotonic()
        time.sleep(seconds)
        ours = cpu_delta(cpu, cpu_seconds(pids)) + time.process_time() - own
        return (machine_busy_seconds() - busy - ours) / (time.monotonic() - began)

    def wait(self) -> None:
        """Until other processes take at most ``threshold`` cores, or the patience is spent."""
        said = False
        while self.left > 0:
            began = time.monotonic()
            others = self.others_now()
            if others <= self.threshold:
                return
            if not said:
                self.say(f"    waiting: other processes take {others:.2f} cores "
                         f"({self.left:.0f} s of patience left)")  # fmt: skip
                said = True
            self.left -= time.monotonic() - began

    def disturbed(self, others: float, seconds: float) -> bool:
        """Whether a run of ``seconds`` during which other processes took ``others`` cores
        should be measured again (there is patience left for it)."""
        if others <= self.threshold or self.left <= 0:
            return False
        self.left -= seconds
        return True


class ProcessGroup:
    """A command started in a new session; ``stop`` ends its whole process group."""

    def __init__(
        self,
        argv: list[str],
        log: pathlib.Path,
        env: dict[str, str] | None = None,
        cwd: pathlib.Path | None = None,
        pidfile: pathlib.Path | None = None,
    ) -> None:
        self.argv = argv
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )
        if pidfile is not None:
            # run.sh's trap kills every group listed here if the harness itself dies.
            with pidfile.open("a") as f:
                f.write(f"{self.proc.pid}\n")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the group, wait up to ``grace`` seconds, then SIGKILL what is left."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc.poll() is not None and not _group_alive(self.proc.pid):
                break
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._log.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
