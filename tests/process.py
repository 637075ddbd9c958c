"""Run `python app.py` as a real child process for start-up and restart tests."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BotProcess:
    """The bot started exactly as a user starts it, with settings in the environment."""

    def __init__(self, env: dict[str, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env, "PORT": str(self.port), "HOST": "127.0.0.1"}
        self.proc: subprocess.Popen[bytes] | None = None
        log_dir = tempfile.mkdtemp(prefix="incidentbot-")
        self.log_path = Path(log_dir) / "bot.log"
        weakref.finalize(self, shutil.rmtree, log_dir, True)  # the log goes with the test

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> BotProcess:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        if wait:
            self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"bot exited early:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"{self.url}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"bot not healthy after {timeout}s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def kill(self, timeout: float = 5.0) -> None:
        """SIGKILL the bot and return once it is gone, so it runs no other instruction."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def bot_env(api_url: str, database_url: str, **settings: object) -> dict[str, str]:
    """Environment for a bot process against the fake Slack (extra settings by name)."""
    from tests.conftest import BOT_TOKEN, SIGNING_SECRET

    env = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SIGNING_SECRET,
           "SLACK_APP_TOKEN": "", "SLACK_API_URL": api_url, "DATABASE_URL": database_url,
           "LOG_LEVEL": "WARNING"}
    env.update({name.upper(): str(value) for name, value in settings.items()})
    return env
