"""The client library ships (issue 15): token lifecycle, refused changes, concurrent
typed edits, data lifecycle (purge leaves no bytes, corrupt rows, wipe, the store's
user) and cheap reconnects. Generated bindings, the real library, a real server."""

import json
import re
import sqlite3
import threading
import time
import unittest
import urllib.request
from pathlib import Path

import harness as h
from harness import bc

SYNCED = 30_000  # ms for wait_for_sync


class Provider(bc.CredentialsProvider):
    """A credentials provider that hands out `token` once `release` is set, counting calls."""

    def __init__(self, token):
        self.token = token
        self.calls = 0
        self.called = threading.Event()
        self.release = threading.Event()

    def fresh_token(self):
        self.calls += 1
        self.called.set()
        self.release.wait(h.WAIT)
        return self.token


class LifecycleTest(unittest.TestCase):
    def setUp(self):
        self.fx = h.Fixture()
        self.tokens = self.fx.seed()
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            try:
                c.close()
            except bc.ClientError.Closed:
                pass
        self.fx.cleanup()

    def client(self, name, server_url, token, **kw):
        c = h.open_client(self.fx.path(name), server_url, token, **kw)
        self.clients.append(c)
        return c

    def close(self, c):
        c.close()
        self.clients.remove(c)

    def synced(self, *clients):
        for c in clients:
            self.assertTrue(c.wait_for_sync(SYNCED), f"not synced: {c.status()}")

    def test_expired_token_purges_nothing_and_refreshes(self):
        """A token that expires while online purges nothing; the provider is asked, the
        edit made meanwhile stays pending and is acknowledged after the refresh."""
        server = self.fx.start()
        short = self.fx.admin("token", "issue", "prof-noord", "--expires-in", "30s")["token"]
        c = self.client("t.db", server.url, short)
        events = h.Recorder()
        c.set_listener(events)
        provider = Provider(self.fx.token("prof-noord"))
        c.set_credentials_provider(provider)
        plan = c.create_plan("noord", "HH-Token")
        act = c.create_activiteit("noord", "Buurtsoep", None, None)
        self.synced(c)

        # The token runs out while the device is online: the server ends the session
        # and the library asks the provider (which waits until we let it answer).
        self.assertTrue(provider.called.wait(60), f"provider never asked: {c.status()}")
        goal = c.add_goal(plan, bc.Leefdomein.WONEN, "Huurachterstand oplossen")
        self.assertEqual(c.status().pending_changes, 1)
        self.assertEqual(events.purged(), {})
        self.assertEqual(h.held(c), {plan, act})
        provider.release.set()

        self.assertTrue(h.wait_until(lambda: c.status().pending_changes == 0), c.status())
        self.assertEqual(self.fx.doc_heads(plan), c.heads(plan))
        self.assertEqual([g["id"] for g in h.doc(c, plan)["goals"]], [goal])
        self.assertEqual(provider.calls, 1)
        self.assertEqual(events.purged(), {})
        self.assertEqual(c.status().state.is_ONLINE(), True)

        # Removing the grant still purges, live.
        self.fx.admin("ungrant", "prof-noord", "professional", "--wijk", "noord")
        self.assertTrue(h.wait_until(lambda: set(events.purged()) == {plan, act}), events.purged())

    def test_refused_token_is_unauthorized_until_set_token(self):
        """With no provider, a refused token is status Unauthorized (nothing purged) until
        the app calls set_token."""
        server = self.fx.start()
        a = self.client("a.db", server.url, self.tokens["prof-noord"])
        plan = a.create_plan("noord", "HH-U")
        self.synced(a)
        self.close(a)
        a = self.client("a.db", server.url, "not-a-valid-token")
        self.assertTrue(
            h.wait_until(lambda: a.status().state.is_UNAUTHORIZED()), a.status()
        )
        self.assertEqual(h.held(a), {plan})
        a.set_token(self.tokens["prof-noord"])
        self.synced(a)
        self.assertEqual(h.held(a), {plan})

    def test_refused_plan_is_flagged_and_does_not_freeze_others(self):
        """A plan in a wijk the user is not granted carries the server's reason; other
        documents keep syncing, last_synced_at moves, discard_unsynced clears pending."""
        server = self.fx.start()
        c = self.client("r.db", server.url, self.tokens["prof-noord"])
        ok = c.create_plan("noord", "HH-Goed")
        self.synced(c)
        first_sync = c.status().last_synced_at_ms
        self.assertIsNotNone(first_sync)

        bad = c.create_plan("zuid", "HH-Verkeerd")
        state = lambda: c.document_state(bad)
        self.assertTrue(h.wait_until(lambda: isinstance(state(), bc.DocumentState.REFUSED)), state())
        self.assertIn("may not create", state().reason)
        self.assertEqual(c.status().refused_documents, 1)

        time.sleep(0.01)
        c.add_goal(ok, bc.Leefdomein.WONEN, "gaat wel door")
        self.assertTrue(c.wait_for_sync(SYNCED), c.status())
        self.assertEqual(self.fx.doc_heads(ok), c.heads(ok))
        self.assertGreater(c.status().last_synced_at_ms, first_sync)
        self.assertEqual(c.document_state(ok), bc.DocumentState.SYNCED())
        self.assertGreater(c.status().pending_changes, 0)  # the refused plan's change

        c.discard_unsynced(bad)
        self.assertEqual(c.status().pending_changes, 0)
        self.assertEqual(c.status().refused_documents, 0)
        self.assertEqual(h.held(c), {ok})

        # last_synced_at survives a restart.
        synced_at = c.status().last_synced_at_ms
        self.close(c)
        again = self.client("r.db", server.url, self.tokens["prof-noord"], start_online=False)
        self.assertEqual(again.status().last_synced_at_ms, synced_at)
        self.assertTrue(again.status().has_synced)

    def test_concurrent_offline_edits_then_typed_edits_never_fail(self):
        """Two devices edit the same plan offline (goals, contacts, status), sync, and each
        then makes 20 typed edits: none fails."""
        server = self.fx.start()
        a = self.client("a.db", server.url, self.tokens["prof-noord"])
        plan = a.create_plan("noord", "HH-Samen")
        goal = a.add_goal(plan, bc.Leefdomein.WONEN, "Woning zoeken")
        self.synced(a)
        b = self.client("b.db", server.url, self.tokens["prof2-noord"])
        self.synced(b)
        a.go_offline()
        b.go_offline()
        self.assertTrue(h.wait_until(lambda: not a.status().online and not b.status().online))
        for dev, who in ((a, "a"), (b, "b")):
            dev.add_goal(plan, bc.Leefdomein.FINANCIEN, f"doel van {who}")
            dev.update_goal(plan, goal, bc.GoalStatus.BEZIG, f"Woning zoeken ({who})")
            dev.add_contact_moment(plan, "2026-03-02", bc.ContactKind.HUISBEZOEK, f"bezoek {who}", None)
            dev.set_plan_status(plan, bc.PlanStatus.INTAKE if who == "a" else bc.PlanStatus.PLAN)
        a.go_online()
        b.go_online()
        self.synced(a, b)
        self.assertTrue(h.wait_until(lambda: a.heads(plan) == b.heads(plan)))
        for i in range(20):
            for dev, who in ((a, "a"), (b, "b")):
                dev.update_goal(plan, goal, None, f"Woning zoeken, stap {i} van {who}")
                dev.add_contact_moment(plan, "2026-03-03", bc.ContactKind.TELEFOON, f"{who}{i}", None)
                dev.set_plan_status(plan, bc.PlanStatus.UITVOERING)
        self.synced(a, b)
        self.assertTrue(h.wait_until(lambda: a.heads(plan) == b.heads(plan)))
        self.assertEqual(len(h.doc(a, plan)["contacts"]), 2 + 40)

    def test_purge_leaves_no_bytes(self):
        """After a purge, neither the plan's text nor its stored ciphertext is in the
        .db, -wal or -shm file."""
        server = self.fx.start()
        secret = "Lindelaan-17-purge-9c2e1"
        a = self.client("a.db", server.url, self.tokens["prof-noord"])
        plan = a.create_plan("noord", secret)
        self.synced(a)
        path = self.fx.path("p.db")
        p = self.client("p.db", server.url, self.tokens["prof2-noord"], discovery_ms=600_000)
        events = h.Recorder()
        p.set_listener(events)
        self.synced(p)
        self.assertIn(plan, h.held(p))
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        sealed = db.execute("SELECT sealed FROM documents WHERE id = ?", (plan,)).fetchone()[0]
        db.close()
        needles = [secret.encode(), sealed[24:88]]  # plaintext, and ciphertext past the nonce

        self.fx.admin("ungrant", "prof2-noord", "professional", "--wijk", "noord")
        self.assertTrue(h.wait_until(lambda: plan in events.purged()), events.purged())
        files = [f for f in Path(path).parent.iterdir() if f.name.startswith("p.db")]
        self.assertTrue(files)
        for f in files:
            data = f.read_bytes()
            for needle in needles:
                self.assertNotIn(needle, data, f.name)

    def test_corrupt_row_marks_only_that_document(self):
        """One row that does not decrypt marks only that document Corrupt; the rest
        opens, and the server's copy replaces it once online."""
        server = self.fx.start()
        path = self.fx.path("c.db")
        c = self.client("c.db", server.url, self.tokens["prof-noord"])
        bad = c.create_plan("noord", "HH-Kapot")
        good = c.create_plan("noord", "HH-Heel")
        self.synced(c)
        self.close(c)
        db = sqlite3.connect(path)
        sealed = bytearray(db.execute("SELECT sealed FROM documents WHERE id = ?", (bad,)).fetchone()[0])
        sealed[30] ^= 0xFF
        db.execute("UPDATE documents SET sealed = ? WHERE id = ?", (bytes(sealed), bad))
        db.commit()
        db.close()

        c = self.client("c.db", server.url, self.tokens["prof-noord"], start_online=False)
        self.assertEqual(h.doc(c, good)["household"]["pseudonym"], "HH-Heel")
        state = c.document_state(bad)
        self.assertIsInstance(state, bc.DocumentState.CORRUPT)
        self.assertIn("decrypt", state.reason)
        c.go_online()
        self.assertTrue(h.wait_until(lambda: c.document_state(bad) == bc.DocumentState.SYNCED()))
        self.assertEqual(h.doc(c, bad)["household"]["pseudonym"], "HH-Kapot")

    def test_wipe_and_store_user(self):
        """A store belongs to its user: another user's token is WrongUser; wipe refuses
        while changes are unsent unless forced, and removes the files."""
        server = self.fx.start()
        path = self.fx.path("w.db")
        c = self.client("w.db", server.url, self.tokens["prof-noord"])
        self.synced(c)
        self.close(c)
        other = self.client("w.db", server.url, self.tokens["prof2-noord"])
        self.assertTrue(
            h.wait_until(lambda: isinstance(other.status().state, bc.ConnectionState.WRONG_USER)),
            other.status(),
        )
        self.assertEqual(other.status().state.store_user, "prof-noord")
        other.go_offline()
        other.create_plan("noord", "HH-Onverzonden")
        with self.assertRaises(bc.ClientError.UnsentChanges):
            other.wipe(False)
        other.wipe(True)
        self.clients.remove(other)
        self.assertFalse([f for f in Path(path).parent.iterdir() if f.name.startswith("w.db")])
        with self.assertRaises(bc.ClientError.Closed):
            other.status()

    def test_reconnect_with_600_documents_loads_only_the_changed(self):
        """A device holding 600 documents of which 20 changed reconnects with work
        proportional to 20: the server loads at most 25 documents for it."""
        server = self.fx.start()
        port = server.addr.rsplit(":", 1)[1]
        c = self.client("big.db", server.url, self.tokens["prof-noord"], start_online=False)
        plans = [c.create_plan("noord", f"HH-{i:03}") for i in range(600)]
        c.go_online()
        self.assertTrue(c.wait_for_sync(300_000), c.status())
        c.go_offline()
        self.assertTrue(h.wait_until(lambda: not c.status().online))
        for plan in plans[:20]:
            c.add_goal(plan, bc.Leefdomein.WONEN, "na het huisbezoek")
        server.stop()
        server = self.fx.start(listen=f"127.0.0.1:{port}")  # cold: nothing loaded
        before = metrics(server)
        c.go_online()
        self.assertTrue(c.wait_for_sync(120_000), c.status())
        for plan in plans[:20]:
            self.assertEqual(self.fx.doc_heads(plan), c.heads(plan))
        after = metrics(server)
        # Every automerge load from the store, first loads and reloads after eviction.
        loads = after["buurtsync_document_loads_total"] - before["buurtsync_document_loads_total"]
        print(f"document loads during the reconnect: {loads}")
        self.assertLessEqual(loads, 25, after)
        # The 20 changed documents were loaded: the counter does count (no vacuous pass).
        self.assertGreaterEqual(loads, 20, after)


def metrics(server):
    """The server's Prometheus series (name without labels → summed value)."""
    text = urllib.request.urlopen(f"http://{server.metrics_addr}/metrics", timeout=h.WAIT).read().decode()
    out = {"buurtsync_document_loads_total": 0.0}
    for line in text.splitlines():
        m = re.match(r"^([a-z_]+)(\{[^}]*\})? ([0-9.e+-]+)$", line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


if __name__ == "__main__":
    unittest.main()
