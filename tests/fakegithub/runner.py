"""Serve `FakeGitHub` with uvicorn on a free loopback port, in a background thread."""

from __future__ import annotations

import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakegithub.api import FakeGitHub
from tests.fakegithub.state import FakeState


@dataclass(frozen=True)
class AppCredentials:
    """What a GitHub App holds: its id, private key, and where it is installed."""

    app_id: int
    private_key_pem: str
    installation_id: int


def generate_key_pair() -> tuple[str, str]:
    """A fresh RSA key pair as (private PEM, public PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


class RunningFakeGitHub:
    """The stand-in, serving on http://127.0.0.1:PORT while the context is open."""

    def __init__(self, root: Path | None = None, state: FakeState | None = None) -> None:
        self._tmp = None if root is not None else tempfile.mkdtemp(prefix="fakegithub-")
        self.root = root or Path(self._tmp or "")
        self.fake = FakeGitHub(self.root, state)
        self.state = self.fake.state
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self.api_url = ""
        self._private_key = ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        sock = socket.socket()
        # Answers go out in two writes (head, body); without this, Nagle's algorithm and
        # delayed ACKs hold each answer ~40 ms. Accepted connections inherit the option.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.fake.asgi_app, loop="asyncio", lifespan="off", log_level="warning"
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="fakegithub", daemon=True
        )
        self._server, self._thread, self._socket = server, thread, sock
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the GitHub stand-in did not start")
            time.sleep(0.01)
        self.api_url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def clone_url(self, owner: str, repo: str) -> str:
        return f"{self.api_url}/{owner}/{repo}.git"

    def create_repo(
        self, owner: str, name: str, files: Mapping[str, str | bytes], default_branch: str = "main"
    ) -> str:
        """A repository with one commit holding `files` on `default_branch`; its clone URL."""
        self.fake.create_repo(owner, name, files, default_branch)
        return self.clone_url(owner, name)

    def install_app(
        self, account: str, app_id: int | None = None, slug: str = "trimo"
    ) -> AppCredentials:
        """Register the App (fresh key, fresh id) if needed and install it on `account`.

        Keep ids unique per test: githubkit caches JWTs by app id, process-wide.
        """
        if self.state.app is None:
            private, public = generate_key_pair()
            self.state.register_app(app_id or self.state.next_id(), public, slug=slug)
            self._private_key = private
        assert self.state.app is not None
        inst = self.state.installation_for(account) or self.state.add_installation(account)
        return AppCredentials(self.state.app.id, self._private_key, inst.id)

    def token_for(self, account: str, repositories: list[str] | None = None) -> str:
        """An installation token for the App's installation on `account` (for tests)."""
        inst = self.state.installation_for(account)
        if inst is None:
            raise KeyError(f"the App is not installed on {account}")
        return self.state.issue_token(inst.id, repositories=repositories).token
