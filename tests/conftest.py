"""Shared fixtures: an isolated home, real throwaway sshd servers on 127.0.0.1, moto's server, a CLI runner.

Every test connects only to loopback (or to a network namespace it creates).

Two tiers: `make test` runs the fast one first (pure functions, fake hosts; it stops at the first failure),
then the integration tier, marked here: every test that uses a real component (sshd, a socket server, moto,
a Pulumi deployment under mocks, a subprocess of a command or script) through a fixture, every test of a module
that imports what starts one, and every test of a module that says `pytestmark = pytest.mark.integration`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from healthcheck import contract
from healthcheck.cli import main
from healthcheck.console import Console
from healthcheck.probe.sandbox import ThrowawaySshd

REPO = Path(__file__).resolve().parent.parent

# A runner that started pytest with SIGINT ignored (a background job of a shell without job control, some CI
# agents) would hand that to every command under test, and its Ctrl-C tests would then fail for a reason that is
# not the command's: give the commands Python's usual Ctrl-C, as a terminal would.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


# The fixtures that bring up a real component.
INTEGRATION_FIXTURES = frozenset(
    {
        "server",
        "make_server",
        "line_server",
        "full_backlog",
        "moto_server",
        "aws_credentials",
        "run_module",
        "deploy",
        "largest_plan",
        "recording_mocks",
    }
)


# What a test module imports to start a real component itself.
INTEGRATION_IMPORTS = frozenset({"subprocess", "socket", "boto3", "mock_aws", "pulumi", "LocalAws", "ThrowawaySshd"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = vars(getattr(item, "module", None) or object())
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())) or INTEGRATION_IMPORTS.intersection(
            module
        ):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the developer's ~/.ssh, ssh-agent or AWS credentials."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    # Every AWS_ variable (profiles, keys, web identity, container credentials, endpoints) could reach AWS.
    for variable in ["SSH_AUTH_SOCK", *(name for name in os.environ if name.startswith("AWS_"))]:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # boto3's default session keeps the credentials it first found: a test after one with credentials
    # would otherwise still have them (and send real requests).
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    # moto's thousands of sample AMIs cost seconds per test; the tests name their own image id.
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    return home


def write_bundle_env(path: Path, **paths: str | Path) -> Path:
    """A bundle.env as the bundle writes it (the contract's values), with some pointed at a test's own folders.

    The instance's scripts read it from TRAINGUARD_BUNDLE_ENV; returns `path`.
    """
    values = contract.instance_environment() | {name: str(value) for name, value in paths.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}={value}\n" for name, value in values.items()))
    return path


AWS_REGION = "eu-west-1"


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials and a region, for boto3 under moto; returns the region."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", AWS_REGION)
    return AWS_REGION


class Tty(io.StringIO):
    """Input that says it is a terminal, so a command asks its question."""

    def isatty(self) -> bool:
        return True


class StringConsole(Console):
    """A command's console whose output a test reads back: `out` and `err`, and `stdin` as given."""

    def __init__(self, stdin: str = "", *, tty: bool = False) -> None:
        super().__init__(stdout=io.StringIO(), stderr=io.StringIO(), stdin=Tty(stdin) if tty else io.StringIO(stdin))

    @property
    def out(self) -> str:
        return self.stdout.getvalue()  # type: ignore[attr-defined, no-any-return]

    @property
    def err(self) -> str:
        return self.stderr.getvalue()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture
def moto_server(aws_credentials: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's server on 127.0.0.1 (a free port), which the test's AWS clients, and its subprocesses', reach through
    AWS_ENDPOINT_URL; returns the endpoint. moto keeps its state in this process: it is forgotten afterwards."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    try:
        yield endpoint
    finally:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10)
        server.stop()


@dataclass
class Server:
    """A running throwaway sshd with an authorized client key and a known_hosts path for the probe."""

    sshd: ThrowawaySshd
    key: Path
    known_hosts: Path

    @property
    def port(self) -> int:
        return self.sshd.ports[0]

    @property
    def target(self) -> str:
        return f"{self.sshd.user}@127.0.0.1:{self.port}"

    def args(self, *extra: str) -> list[str]:
        """probe arguments that log in to this server with its key.

        The load average is the test machine's, not the host's to answer for,
        so it is never held against the host here.
        """
        return ["-i", str(self.key), "--known-hosts", str(self.known_hosts), "--load-per-cpu-max", "1000", *extra]


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    started: list[ThrowawaySshd] = []

    def make(ports: int = 1, extra_config: str = "", key_options: str = "", max_startups: str = "1000") -> Server:
        sshd = ThrowawaySshd(ports=ports, extra_config=extra_config, max_startups=max_startups)
        started.append(sshd)
        key = sshd.add_client_key("id_client", key_options)
        sshd.start()
        return Server(sshd, key, tmp_path / f"known_hosts_{len(started)}")

    yield make
    for sshd in started:
        sshd.close()


@pytest.fixture
def server(make_server: Callable[..., Server]) -> Server:
    return make_server()


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)  # type: ignore[no-any-return]

    @property
    def result(self) -> dict[str, Any]:
        (only,) = self.json["results"]
        return only  # type: ignore[no-any-return]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Run]:
    """Run `python -m healthcheck ARGS` in-process; returns exit status, stdout and stderr."""

    def run(*argv: str) -> Run:
        out = io.StringIO()
        code = main(list(argv), console=Console(stdout=out))
        return Run(code, out.getvalue(), capsys.readouterr().err)

    return run


@pytest.fixture
def run_module() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`python -m healthcheck ...` in a fresh interpreter (prefix with `ip netns exec` via `wrapper`)."""

    def run(*argv: str, wrapper: tuple[str, ...] = (), timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*wrapper, sys.executable, "-m", "healthcheck", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
            check=False,
        )

    return run


class LineServer:
    """A loopback TCP server whose per-connection behaviour is a function of the accepted socket."""

    def __init__(self, handle: Callable[[socket.socket, int], None]) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._handle = handle
        self._stop = threading.Event()
        self._connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._listener.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._connections += 1
            threading.Thread(target=self._run, args=(conn, self._connections), daemon=True).start()

    def _run(self, conn: socket.socket, number: int) -> None:
        with conn, contextlib.suppress(OSError):
            self._handle(conn, number)

    def close(self) -> None:
        self._stop.set()
        self._listener.close()


@pytest.fixture
def line_server() -> Iterator[Callable[[Callable[[socket.socket, int], None]], LineServer]]:
    servers: list[LineServer] = []

    def make(handle: Callable[[socket.socket, int], None]) -> LineServer:
        servers.append(LineServer(handle))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops new SYNs, so nothing answers.

    This is a frozen server's port once its queue has filled, on a host whose kernel is alive.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(2):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    yield port
    for filler in fillers:
        filler.close()
    listener.close()
