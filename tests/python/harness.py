"""Test harness for the Python tests of the client library.

Starts the real `buurtsync serve` (target/debug/buurtsync, or $BUURTSYNC_BIN) on a
temporary SQLite database, seeds it with the admin CLI, and opens clients through the
GENERATED bindings (client-ffi/bindings/python, made by scripts/gen-bindings.sh).
Every wait is bounded; every process a test starts, it stops.
"""

import asyncio
import inspect
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BINDINGS = ROOT / "client-ffi" / "bindings" / "python"
sys.path.insert(0, str(BINDINGS))

import buurtsync_client as bc  # noqa: E402  (generated)

WAIT = 30.0  # seconds; generous for a shared 2-core machine


def binary():
    path = Path(os.environ.get("BUURTSYNC_BIN", ROOT / "target" / "debug" / "buurtsync"))
    if not path.exists():
        raise RuntimeError(f"{path} not found: run `cargo build --bins` first")
    return str(path)


def wait_until(predicate, timeout=WAIT, interval=0.05):
    """Polls `predicate` until it is true or `timeout` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


class Fixture:
    """A temporary directory with a server database and the admin CLI on it."""

    def __init__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="buurtsync-py-")
        self.dir = Path(self._tmp.name)
        self.db_url = f"sqlite://{self.dir / 'server.sqlite3'}"
        self.servers = []

    def cleanup(self):
        for server in self.servers:
            server.kill()
        self._tmp.cleanup()

    def admin(self, *args):
        out = subprocess.run(
            [binary(), "--database", self.db_url, "--json", *args],
            capture_output=True,
            timeout=WAIT,
        )
        if out.returncode != 0:
            raise RuntimeError(f"buurtsync {args} failed: {out.stderr.decode()}")
        return json.loads(out.stdout)

    def token(self, user):
        return self.admin("token", "issue", user)["token"]

    def seed(self):
        """Wijken noord and zuid; two professionals and a volunteer in noord, one
        professional in zuid. Returns their tokens."""
        for wijk in ("noord", "zuid"):
            self.admin("wijk", "add", wijk)
        users = [
            ("prof-noord", "professional", "noord"),
            ("prof2-noord", "professional", "noord"),
            ("vol-noord", "volunteer", "noord"),
            ("prof-zuid", "professional", "zuid"),
        ]
        for user, role, wijk in users:
            self.admin("user", "add", user)
            self.admin("grant", user, role, "--wijk", wijk)
        return {user: self.token(user) for user, _, _ in users}

    def start(self, listen="127.0.0.1:0", env=None):
        """Starts a server; `env` adds environment settings (e.g. token lifetimes)."""
        server = Server(self.db_url, listen, env)
        self.servers.append(server)
        return server

    def doc_heads(self, doc_id):
        return sorted(self.admin("doc", "info", doc_id)["heads"])

    def path(self, name):
        return str(self.dir / name)


class Server:
    """A running `buurtsync serve`; its address is read from its JSON log."""

    def __init__(self, db_url, listen, env=None):
        self.proc = subprocess.Popen(
            # Plain ws:// on loopback must be asked for explicitly (the server
            # refuses to start without TLS otherwise).
            [binary(), "--database", db_url, "--log-json", "serve", "--listen", listen,
             "--insecure-plain-http"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # /metrics is served on its own listener (loopback, a free port here).
            env={**os.environ, "BUURTSYNC_LOG": "info",
                 "BUURTSYNC_METRICS_LISTEN": "127.0.0.1:0", **(env or {})},
        )
        lines = queue.Queue()
        threading.Thread(target=self._read, args=(lines,), daemon=True).start()
        deadline = time.monotonic() + WAIT
        self.addr = None
        self.metrics_addr = None
        while time.monotonic() < deadline and (self.addr is None or self.metrics_addr is None):
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None:
                    raise RuntimeError("server exited before listening")
                continue
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "buurtsync listening":
                self.addr = fields["addr"]
            if fields.get("message") == "metrics listening":
                self.metrics_addr = fields["addr"]
        if self.addr is None or self.metrics_addr is None:
            self.kill()
            raise RuntimeError("server did not start listening")

    def _read(self, lines):
        for line in self.proc.stderr:
            lines.put(line.decode(errors="replace"))

    @property
    def url(self):
        return f"ws://{self.addr}/sync"

    def stop(self):
        """SIGTERM and a bounded wait for a clean exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=WAIT)
        self.proc.stderr.close()


def key(byte=7):
    """A 32-byte key, as the platform keystore would hand it out."""
    return bytes([byte]) * 32


def options(start_online=True, discovery_ms=300, **extra):
    """Fast discovery and reconnects for tests; plain ws:// on loopback allowed."""
    fields = dict(
        discovery_interval_ms=discovery_ms,
        backoff_initial_ms=100,
        backoff_max_ms=800,
        start_online=start_online,
        allow_insecure=True,
        extra_ca_pem=None,
        full_reconcile_interval_ms=600_000,
    )
    fields.update(extra)
    return bc.ClientOptions(**fields)


class Client:
    """The client as a test drives it: every async call (a coroutine in the generated
    Python) is run to completion before it returns, so the tests read as a sequence of
    steps; `close()` is the library's `shutdown()`. The async API itself is what
    mobile-examples/python uses (asyncio)."""

    def __init__(self, inner):
        self.inner = inner

    def close(self):
        self.inner.shutdown()

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            if inspect.isawaitable(result):
                return asyncio.run(_wait(result))
            return result

        return call


async def _wait(awaitable):
    return await awaitable


def open_client(path, url, token, start_online=True, key_byte=7, discovery_ms=300, **extra):
    return Client(
        bc.BuurtClient.open_with_options(
            path, key(key_byte), url, token, options(start_online, discovery_ms, **extra)
        )
    )


class Recorder(bc.ClientListener):
    """A listener that records every event."""

    def __init__(self):
        self.lock = threading.Lock()
        self.changes = []
        self.statuses = []

    def on_status(self, status):
        with self.lock:
            self.statuses.append(status)

    def on_changes(self, changes):
        with self.lock:
            self.changes.extend(changes)

    def purged(self):
        with self.lock:
            return {
                c.doc_id: c.change.reason
                for c in self.changes
                if isinstance(c.change, bc.ChangeKind.PURGED)
            }

    def remote(self):
        with self.lock:
            return {c.doc_id for c in self.changes if isinstance(c.change, bc.ChangeKind.REMOTE)}

    def saw_online(self, online):
        with self.lock:
            return any(s.online == online for s in self.statuses)


def doc(client, doc_id):
    return json.loads(client.get_json(doc_id))


def held(client, kind=None, wijk=None):
    return {d.id for d in client.list_documents(kind, wijk)}
