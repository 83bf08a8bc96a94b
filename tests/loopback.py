"""Services started as processes on loopback for end-to-end tests: bounded waits that say
what they waited for, and a registry of processes that ends them all (and what they
started) at teardown, each with its log file."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(
    what: str, check: Callable[[], T | None], timeout: float, logs: Callable[[], str] = str
) -> T:
    """Poll ``check`` until it returns something other than None or False; fail after
    ``timeout`` seconds saying what was awaited, with ``logs()`` (the services' logs)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs()}")
        time.sleep(0.05)


class Services:
    """Processes started by the test, each in its own session with a log file; `stop`
    ends them and everything they started."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env = folder, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        with (self.folder / f"{name}.log").open("wb") as log:  # the child keeps its copy
            proc = subprocess.Popen(
                args,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def tail(self, *names: str, chars: int = 4000) -> str:
        """The end of each named service's log (all of them by default)."""
        text = []
        for name in names or tuple(self.procs):
            log = self.folder / f"{name}.log"
            body = log.read_text(errors="replace")[-chars:] if log.exists() else ""
            text.append(f"--- {name} (last {chars} chars) ---\n{body}")
        return "\n".join(text)

    def cli(self, *args: str, timeout: float = 120) -> str:
        """A `prefect` command against the server; its output."""
        done = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=ROOT,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"prefect {' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def stop(self) -> None:
        for proc in reversed(self.procs.values()):
            try:
                family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(True)]
            except psutil.NoSuchProcess:
                family = []
            for member in family:
                with quiet():
                    member.send_signal(signal.SIGTERM)
            _, alive = psutil.wait_procs(family, timeout=10)
            for member in alive:
                with quiet():
                    member.kill()
            with quiet():
                os.killpg(proc.pid, signal.SIGKILL)  # anything left in its session
            proc.wait(timeout=30)


def quiet() -> contextlib.suppress:
    """Ignore a process that is already gone."""
    return contextlib.suppress(psutil.Error, ProcessLookupError)


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
