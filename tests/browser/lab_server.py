"""A throw-away JupyterLab server for the browser tests.

The server runs from this virtual environment on a free loopback port with a random token, in temporary
directories only (root, settings, workspaces, runtime, config, data), so a reader's own JupyterLab setup neither
affects the tests nor is touched by them. Settings that make a headless run deterministic:

- ``window.jupyterapp`` is exposed (``LabApp.expose_app_in_browser``): the tests read the kernel's status and
  the cells' execution state from it instead of guessing from the DOM;
- notebook windowing is off (``windowingMode: none``): with windowing, cells outside the viewport are detached
  from the DOM and their widgets cannot be found or screenshotted;
- news, update checks and the extension manager are off: nothing leaves the machine;
- autosave is off: the notebooks are copies, but a test should not write to them behind its back.

The server is stopped by its process group (it is started in a new session), after its kernels were shut
down through the REST API (kernels live in process groups of their own).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

USER_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}

LAB_CONFIG = {
    "LabApp": {
        "expose_app_in_browser": True,
        "news_url": None,
        "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        "extension_manager": "readonly",
    },
    # allow_root: CI containers run as root; the server listens on loopback only, with a token.
    "ServerApp": {"terminals_enabled": False, "open_browser": False, "allow_root": True},
}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """JupyterLab serving ``workdir / "root"``; ``start()`` blocks until the REST API answers."""

    def __init__(self, workdir: Path, startup_timeout: float = 120.0):
        self.workdir = Path(workdir)
        self.root = self.workdir / "root"
        self.log_path = self.workdir / "jupyterlab.log"
        self.port = free_port()
        self.token = secrets.token_hex(16)
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self._log_file = None

    def _prepare_dirs(self) -> dict[str, str]:
        dirs = {name: self.workdir / name for name in ("settings", "workspaces", "runtime", "config", "data")}
        for path in [self.root, *dirs.values()]:
            path.mkdir(parents=True, exist_ok=True)
        for plugin, values in USER_SETTINGS.items():
            target = dirs["settings"] / f"{plugin}.jupyterlab-settings"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(values))
        (dirs["config"] / "jupyter_lab_config.json").write_text(json.dumps(LAB_CONFIG))
        return {
            "JUPYTERLAB_SETTINGS_DIR": str(dirs["settings"]),
            "JUPYTERLAB_WORKSPACES_DIR": str(dirs["workspaces"]),
            "JUPYTER_RUNTIME_DIR": str(dirs["runtime"]),
            "JUPYTER_CONFIG_DIR": str(dirs["config"]),
            # no user-level kernelspec may shadow `python3`: the kernels must be this environment's ipykernel
            "JUPYTER_DATA_DIR": str(dirs["data"]),
        }

    def start(self) -> LabServer:
        env = {**os.environ, **self._prepare_dirs(), "PYTHONUNBUFFERED": "1"}
        # The kernels must import the working tree's dpo_teach and never a GUI matplotlib backend.
        env.pop("MPLBACKEND", None)
        cmd = [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--ServerApp.root_dir={self.root}",
            f"--IdentityProvider.token={self.token}",
            f"--LabApp.user_settings_dir={env['JUPYTERLAB_SETTINGS_DIR']}",
            f"--LabApp.workspaces_dir={env['JUPYTERLAB_WORKSPACES_DIR']}",
        ]
        self._log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            cmd,
            cwd=self.root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"JupyterLab exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                self.api("GET", "/api/status", timeout=2)
                return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"JupyterLab did not answer within {self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def api(self, method: str, path: str, timeout: float = 10):
        """Call the server's REST API with the token; returns the decoded JSON body (or None)."""
        request = urllib.request.Request(
            f"{self.base_url}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
        return json.loads(body) if body else None

    def lab_url(self, path: str) -> str:
        """URL that opens ``path`` (relative to the server root) in JupyterLab, token included.

        Each URL names a fresh workspace: the default workspace would restore the notebooks an earlier
        page had open, and start a kernel for each of them.
        """
        return f"{self.base_url}/lab/workspaces/{secrets.token_hex(6)}/tree/{path}?token={self.token}"

    def shutdown_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels") or []:
            try:
                self.api("DELETE", f"/api/kernels/{kernel['id']}", timeout=30)
            except urllib.error.HTTPError as err:
                if err.code != 404:  # 404: it was already gone
                    raise

    def log_tail(self, n_chars: int = 4000) -> str:
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-n_chars:]

    def stop(self) -> None:
        """Shut the kernels down, then end the server's process group (SIGTERM, SIGKILL after 15 s)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                self.shutdown_kernels()
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass  # the server is unhealthy; its process group is ended below all the same
            pgid = os.getpgid(self.process.pid)
            os.killpg(pgid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(pgid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


def copy_book(book_dir: Path, root: Path) -> Path:
    """Copy the chapters (and any data files next to them) into the server root; returns the copy's dir."""
    target = root / "book"
    shutil.copytree(book_dir, target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    return target
