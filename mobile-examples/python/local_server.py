"""A throw-away buurtsync server for the examples: starts `buurtsync serve` on a
temporary SQLite database on 127.0.0.1, seeds a wijk and users with the admin CLI, and
stops it at the end. Point BUURTSYNC_BIN at the binary if it is not in target/debug/."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The generated bindings (scripts/gen-bindings.sh), if PYTHONPATH does not name them.
sys.path.append(str(ROOT / "client-ffi" / "bindings" / "python"))

BINARY = os.environ.get("BUURTSYNC_BIN", str(ROOT / "target" / "debug" / "buurtsync"))


class LocalServer:
    def __init__(self, wijk, users):
        """`users`: (user id, role) pairs, all granted in `wijk`."""
        self.tmp = tempfile.TemporaryDirectory(prefix="buurtsync-example-")
        self.dir = Path(self.tmp.name)
        self.db = f"sqlite://{self.dir / 'server.sqlite3'}"
        self.admin("wijk", "add", wijk)
        self.tokens = {}
        for user, role in users:
            self.admin("user", "add", user)
            self.admin("grant", user, role, "--wijk", wijk)
            self.tokens[user] = self.admin("token", "issue", user)["token"]
        self.proc = subprocess.Popen(
            # Plain ws:// on loopback only; a real server serves TLS (--tls-cert/--tls-key).
            [BINARY, "--database", self.db, "--log-json", "serve", "--listen", "127.0.0.1:0",
             "--insecure-plain-http"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = None
        deadline = time.monotonic() + 30
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if fields.get("message") == "buurtsync listening":
                self.url = f"ws://{fields['addr']}/sync"
        if self.url is None:
            self.stop()
            raise SystemExit("the buurtsync server did not start")

    def admin(self, *args):
        out = subprocess.run([BINARY, "--database", self.db, "--json", *args],
                             capture_output=True, timeout=30, check=True)
        return json.loads(out.stdout)

    def open_client(self, db_name, user):
        """Opens `user`'s device. The example server is plain ws:// on loopback, which a
        client refuses unless told (`allow_insecure`); a real app gives a wss:// URL."""
        import buurtsync_client as bc

        options = bc.default_client_options()
        options.allow_insecure = True
        return bc.BuurtClient.open_with_options(
            self.path(db_name), device_key(user), self.url, self.tokens[user], options
        )

    def open_enrolled(self, db_name, session):
        """Opens a device signed in with a device session (`device_session.py`): its
        access token to start, and the session as the credentials provider that keeps
        the library supplied with fresh ones."""
        import buurtsync_client as bc

        options = bc.default_client_options()
        options.allow_insecure = True
        client = bc.BuurtClient.open_with_options(
            self.path(db_name), device_key(db_name), self.url, session.access_token, options
        )
        client.set_credentials_provider(session)
        return client

    @property
    def base(self):
        """The server's HTTP address (for the API and /beheer)."""
        return self.url.split("/sync")[0].replace("ws://", "http://", 1)

    def path(self, name):
        """A place for a device's local store."""
        return str(self.dir / name)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def device_key(name):
    """Stands in for the platform keystore: a 32-byte key per device."""
    return (name.encode() * 32)[:32]
