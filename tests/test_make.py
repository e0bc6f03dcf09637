"""The Makefile and CI entry point do what the README promises: `make test`, `make install`, `make lab`."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest
from browser.lab_server import free_port
from conftest import BOOK, REPO

STAMP = ".venv/.install-stamp"


def make(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_make_test_runs_pytest_on_tests_and_strict_nbval_on_book():
    # -o STAMP: treat the install as done, so the dry run shows only the test command.
    run = make("-n", "-o", STAMP, "test")
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in run.stdout.splitlines() if "pytest" in line]
    args = line.split()
    assert args[:3] == [".venv/bin/python", "-m", "pytest"], line
    assert args[3:5] == ["tests", "book"], line
    assert "--nbval" in args and "--nbval-lax" not in args, line
    assert args[args.index("--nbval-sanitize-with") + 1] == "tests/nbval_sanitize.cfg", line
    assert (REPO / "tests/nbval_sanitize.cfg").is_file()


def test_make_test_chapter_runs_nbval_on_one_notebook():
    run = make("-n", "-o", STAMP, "test-chapter", "NB=book/00_preface.ipynb")
    assert run.returncode == 0, run.stderr
    (line,) = [line for line in run.stdout.splitlines() if "pytest" in line]
    assert line.split()[3] == "book/00_preface.ipynb" and "--nbval" in line.split(), line


def test_make_test_chapter_without_nb_says_how():
    run = make("-o", STAMP, "test-chapter")
    assert run.returncode != 0
    assert "usage: make test-chapter NB=book/00_preface.ipynb" in run.stdout


def test_ci_runs_exactly_make_test():
    script = REPO / ".ci/run"
    assert os.access(script, os.X_OK), ".ci/run must be executable"
    lines = [line.strip() for line in script.read_text().splitlines()]
    assert lines[0].startswith("#!") and "bash" in lines[0]
    assert "set -euo pipefail" in lines
    commands = [line for line in lines if line and not line.startswith("#")]
    assert commands[-1] == "make test", "the last command of .ci/run must be the README's `make test`"
    readme = (REPO / "README.md").read_text()
    assert "make test" in readme and "make lab" in readme


def test_second_make_install_does_nothing():
    first = make("install")
    assert first.returncode == 0, first.stdout + first.stderr
    second = make("install")
    assert second.returncode == 0, second.stdout + second.stderr
    output = second.stdout + second.stderr
    assert "pip" not in output and "venv" not in output, output
    assert "Nothing to be done for 'install'" in output, output
    assert make("-q", "install").returncode == 0  # make's own answer: the stamp is up to date


def _get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


@pytest.mark.slow
def test_make_lab_serves_the_book(tmp_path):
    port, token = free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        # Keep the reader's own Jupyter settings out of the test, and the test's files out of $HOME.
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"),
    }
    lab_args = (
        f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port_retries=0 --IdentityProvider.token={token}"
    )
    log = open(tmp_path / "lab.log", "wb")  # noqa: SIM115 -- closed in the finally block
    process = subprocess.Popen(
        ["make", "-o", STAMP, "lab", f"PORT={port}", f"LAB_ARGS={lab_args}"],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: make, jupyter and anything they start
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        status = None
        while status is None:
            assert process.poll() is None, (tmp_path / "lab.log").read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "JupyterLab did not answer /api/status within 120 s"
            try:
                status = _get_json(f"{base}/api/status?token={token}")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert "started" in status
        listing = _get_json(f"{base}/api/contents?token={token}")
        served = {item["name"] for item in listing["content"] if item["type"] == "notebook"}
        assert served == {path.name for path in BOOK.glob("*.ipynb")}
        assert served, "the served root has no chapters: it is not book/"
        with pytest.raises(urllib.error.HTTPError) as denied:  # the token is really required
            _get_json(f"{base}/api/contents")
        assert denied.value.code == 403
        # The reader's defaults: no news pop-up over the first figure, and no autosave rewriting a chapter on open.
        # tools/jupyterlab_overrides.json becomes each setting's default in the schema the server hands out.
        settings = {
            plugin: {
                key: spec.get("default")
                for key, spec in _get_json(f"{base}/lab/api/settings/{plugin}?token={token}")["schema"][
                    "properties"
                ].items()
            }
            for plugin in (
                "@jupyterlab/apputils-extension:notification",
                "@jupyterlab/docmanager-extension:plugin",
            )
        }
        assert settings["@jupyterlab/apputils-extension:notification"]["fetchNews"] == "false"
        assert settings["@jupyterlab/apputils-extension:notification"]["checkForUpdates"] is False
        assert settings["@jupyterlab/docmanager-extension:plugin"]["autosave"] is False
    finally:
        _stop_group(process)
        log.close()


def _stop_group(process: subprocess.Popen) -> None:
    """End the process group started with ``start_new_session`` (SIGTERM, then SIGKILL after 30 s)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return  # every process of the group has exited
        try:
            process.wait(timeout=30)
            return
        except subprocess.TimeoutExpired:
            continue
