"""A throwaway OpenSSH sshd on 127.0.0.1, for the demo, the tests and the benchmark.

It is real Debian openssh-server, started with generated keys in a temporary
directory. `freeze()` sends it SIGSTOP, which reproduces the incident exactly:
the kernel still completes TCP handshakes on the listening ports, and no SSH
identification ever comes.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
# OpenSSH refuses more ListenAddress lines than this (MAX_LISTEN_SOCKS).
MAX_PORTS = 16


class SandboxError(RuntimeError):
    """The throwaway sshd could not be set up; the message says what to install or fix."""


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free on 127.0.0.1 right now."""
    holders = []
    for _ in range(count):
        holder = socket.socket()
        holder.bind(("127.0.0.1", 0))
        holders.append(holder)
    ports = [holder.getsockname()[1] for holder in holders]
    for holder in holders:
        holder.close()
    return ports


def generate_key(path: Path, comment: str = "trainguard-sandbox") -> Path:
    """An ed25519 key pair at path (and path.pub), without a passphrase."""
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    return path


class ThrowawaySshd:
    """A real sshd listening on up to 16 loopback ports, torn down without a trace.

    It lets in the current user only, with keys from its own authorized_keys.
    """

    def __init__(
        self,
        ports: int | list[int] = 1,
        workdir: Path | None = None,
        extra_config: str = "",
        skip_shell_rc: bool = True,
        max_startups: str = "1000",
        parent: Path | None = None,
    ) -> None:
        if not Path(SSHD).exists():
            raise SandboxError(f"{SSHD} not found: install Debian's openssh-server (apt-get install openssh-server)")
        self.ports = free_ports(ports) if isinstance(ports, int) else list(ports)
        if not 1 <= len(self.ports) <= MAX_PORTS:
            raise SandboxError(f"one sshd listens on 1 to {MAX_PORTS} ports, not {len(self.ports)}")
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="trainguard-sshd-", dir=parent)) if workdir is None else workdir
        self.host_key = generate_key(self.workdir / "ssh_host_ed25519_key", "trainguard-sandbox-host")
        self.authorized_keys = self.workdir / "authorized_keys"
        self.authorized_keys.touch(mode=0o600)
        self.user = getpass.getuser()
        self.extra_config = extra_config
        self.skip_shell_rc = skip_shell_rc
        # sshd keeps the first value of a keyword, so extra_config cannot override this one.
        self.max_startups = max_startups
        self.process: subprocess.Popen[bytes] | None = None
        self.frozen = False

    def add_client_key(self, name: str, options: str = "") -> Path:
        """A new client key pair, authorized for login (with `options`, e.g. command="sleep 600")."""
        key = generate_key(self.workdir / name, f"trainguard-sandbox-{name}")
        self.authorize(key, options)
        return key

    def authorize(self, key: Path, options: str = "") -> None:
        """Let the private key at `key` (its `.pub` beside it) log in."""
        public = key.with_name(key.name + ".pub").read_text().strip()
        with self.authorized_keys.open("a") as authorized:
            authorized.write(f"{options} {public}\n" if options else f"{public}\n")

    def known_hosts_line(self, port: int) -> str:
        """The known_hosts entry a client that trusts this server would hold for `port`."""
        key_type, key_b64 = self.host_key.with_name(self.host_key.name + ".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{port} {key_type} {key_b64}"

    def rotate_host_key(self) -> None:
        """Replace the host key and restart, as a rebuilt host (or an impostor) would look."""
        self.stop()
        for path in (self.host_key, self.host_key.with_name(self.host_key.name + ".pub")):
            path.unlink()
        generate_key(self.host_key, "trainguard-sandbox-host-rotated")
        self.start()

    def start(self, ready_timeout: float = 10.0) -> ThrowawaySshd:
        config = self.workdir / "sshd_config"
        config.write_text(self._config())
        if os.geteuid() == 0:
            # Debian's sshd insists on its privilege-separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        log = (self.workdir / "sshd.log").open("ab")
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
        log.close()
        self._wait_ready(ready_timeout)
        return self

    def freeze(self) -> None:
        """SIGSTOP: ports stay open, no banner comes; the incident, reproduced."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        self.frozen = True

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.frozen = False

    def stop(self) -> None:
        if self.process is None:
            return
        if self.frozen:
            self.thaw()
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        self._kill_sessions()

    def close(self) -> None:
        """Stop sshd and its sessions, and delete the keys and config."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ThrowawaySshd:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _config(self) -> str:
        listen = "".join(f"ListenAddress 127.0.0.1:{port}\n" for port in self.ports)
        return (
            listen
            + f"HostKey {self.host_key}\n"
            + f"AuthorizedKeysFile {self.authorized_keys}\n"
            + f"PidFile {self.workdir / 'sshd.pid'}\n"
            + f"AllowUsers {self.user}\n"
            # Keys live in a temporary directory that StrictModes would reject.
            + "StrictModes no\n"
            + "PermitRootLogin prohibit-password\n"
            + "PasswordAuthentication no\n"
            + "KbdInteractiveAuthentication no\n"
            + "UsePAM no\n"
            + "UseDNS no\n"
            + "PrintMotd no\n"
            # Many probes at once must not be dropped as a connection flood (unless a test wants that).
            + f"MaxStartups {self.max_startups}\n"
            + "LogLevel ERROR\n"
            # bash sources ~/.bashrc for commands run over ssh unless SHLVL says it
            # is nested. The sandbox logs in as the developer, whose ~/.bashrc (pyenv,
            # conda) can cost 0.15 s of CPU per session: too much when 50 sessions
            # share 2 cores. skip_shell_rc=False keeps it, as on a real host.
            + ("SetEnv SHLVL=1\n" if self.skip_shell_rc else "")
            + self.extra_config
        )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.ports)
        while pending:
            assert self.process is not None
            if self.process.poll() is not None:
                log = (self.workdir / "sshd.log").read_text(errors="replace").strip()
                raise SandboxError(f"sshd exited with status {self.process.returncode}: {log[-500:]}")
            if time.monotonic() > deadline:
                raise SandboxError(f"sshd did not answer on ports {pending} within {timeout}s")
            try:
                with socket.create_connection(("127.0.0.1", pending[0]), timeout=1.0) as probe:
                    if probe.recv(4).startswith(b"SSH-"):
                        pending.pop(0)
                        continue
            except OSError:
                pass
            time.sleep(0.02)

    def _kill_sessions(self) -> None:
        """End session processes (a forced `sleep 600`, say) that outlive sshd."""
        markers = [f" 127.0.0.1 {port}".encode() for port in self.ports]
        for environ in Path("/proc").glob("[0-9]*/environ"):
            try:
                variables = environ.read_bytes().split(b"\0")
            except OSError:
                continue
            for variable in variables:
                if variable.startswith(b"SSH_CONNECTION=") and any(variable.endswith(m) for m in markers):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(int(environ.parent.name), signal.SIGKILL)
                    break


def _run(command: list[str]) -> None:
    try:
        subprocess.run(command, check=True, capture_output=True)
    except FileNotFoundError:
        raise SandboxError(f"{command[0]} not found: install Debian's openssh-client") from None
    except subprocess.CalledProcessError as error:
        raise SandboxError(f"{' '.join(command)} failed: {error.stderr.decode(errors='replace').strip()}") from None
