"""The client library end to end: generated Python bindings, the real library, a real
`buurtsync serve` on loopback and real SQLite files. One test per acceptance point of
issue 3 (mobile client library)."""

import json
import os
import signal
import subprocess
import sys
import time
import unittest
from pathlib import Path

import harness as h
from harness import bc

SYNCED = 30_000  # ms for wait_for_sync


class ClientTest(unittest.TestCase):
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

    def client(self, name, server_url, token, start_online=True, key_byte=7, discovery_ms=300):
        c = h.open_client(self.fx.path(name), server_url, token, start_online, key_byte, discovery_ms)
        self.clients.append(c)
        return c

    def close(self, c):
        c.close()
        self.clients.remove(c)

    def synced(self, *clients):
        for c in clients:
            self.assertTrue(c.wait_for_sync(SYNCED), f"not synced: {c.status()}")

    def test_two_devices_edit_offline_and_converge_third_catches_up(self):
        """Two devices edit the same plan offline and both end with all edits; a third
        device that was away catches up on restart from its own local store."""
        server = self.fx.start()
        a = self.client("a.db", server.url, self.tokens["prof-noord"])
        plan = a.create_plan("noord", "HH-Jansen")
        self.synced(a)
        b = self.client("b.db", server.url, self.tokens["prof2-noord"])
        c = self.client("c.db", server.url, self.tokens["prof2-noord"])
        self.synced(b, c)
        self.assertIn(plan, h.held(b))
        self.assertIn(plan, h.held(c))
        self.close(c)  # the third device is away from here on

        a.go_offline()
        b.go_offline()
        self.assertTrue(h.wait_until(lambda: not a.status().online and not b.status().online))
        goal_a = a.add_goal(plan, bc.Leefdomein.WONEN, "Huurachterstand oplossen")
        a.add_contact_moment(plan, "2026-03-02", bc.ContactKind.HUISBEZOEK, "Keukentafelgesprek", "prof-noord")
        goal_b = b.add_goal(plan, bc.Leefdomein.FINANCIEN, "Schuldhulp aanvragen")
        b.add_consent(plan, "gegevens delen met schuldhulp", "2026-03-02", "mevrouw Jansen")
        self.assertGreater(a.status().pending_changes, 0)
        self.assertGreater(b.status().pending_changes, 0)
        self.assertEqual(len(h.doc(a, plan)["goals"]), 1)

        a.go_online()
        b.go_online()
        self.synced(a, b)
        both = lambda: a.heads(plan) == b.heads(plan) and len(h.doc(a, plan)["goals"]) == 2
        self.assertTrue(h.wait_until(both), f"{h.doc(a, plan)} vs {h.doc(b, plan)}")
        for dev in (a, b):
            d = h.doc(dev, plan)
            self.assertEqual({g["id"] for g in d["goals"]}, {goal_a, goal_b})
            self.assertEqual(len(d["contacts"]), 1)
            self.assertEqual(len(d["consents"]), 1)
        self.assertEqual(self.fx.doc_heads(plan), a.heads(plan))

        # The third device: its own store still has the old plan, offline.
        c = self.client("c.db", server.url, self.tokens["prof2-noord"], start_online=False)
        self.assertEqual(h.doc(c, plan)["goals"], [])
        c.go_online()
        self.synced(c)
        self.assertTrue(h.wait_until(lambda: c.heads(plan) == a.heads(plan)))
        self.assertEqual({g["id"] for g in h.doc(c, plan)["goals"]}, {goal_a, goal_b})

    def test_discovery_fresh_device_and_live_new_plan(self):
        """A fresh device gets every plan and activiteit of its wijk (none of another)
        in one sync, and a colleague's new plan appears while it stays online."""
        server = self.fx.start()
        a = self.client("a.db", server.url, self.tokens["prof-noord"])
        noord = {
            a.create_plan("noord", "HH-1"),
            a.create_plan("noord", "HH-2"),
            a.create_activiteit("noord", "Taalcafé", "ontmoeting", "De Kiem"),
        }
        z = self.client("z.db", server.url, self.tokens["prof-zuid"])
        zuid = z.create_plan("zuid", "HH-Z")
        self.synced(a, z)

        fresh = self.client("fresh.db", server.url, self.tokens["prof2-noord"])
        events = h.Recorder()
        fresh.set_listener(events)
        self.synced(fresh)
        self.assertEqual(h.held(fresh), noord)
        self.assertNotIn(zuid, h.held(fresh))
        self.assertEqual(len(h.held(fresh, bc.DocumentKind.PLAN, "noord")), 2)
        self.assertEqual(len(h.held(fresh, bc.DocumentKind.ACTIVITEIT)), 1)
        self.assertTrue(h.wait_until(lambda: noord <= events.remote()))

        later = a.create_plan("noord", "HH-later")
        self.synced(a)
        self.assertTrue(h.wait_until(lambda: later in h.held(fresh)), "new plan never arrived")
        self.assertTrue(h.wait_until(lambda: h.doc(fresh, later)["household"]["pseudonym"] == "HH-later"))
        self.assertTrue(h.wait_until(lambda: later in events.remote()))

        # A volunteer's device gets the activiteit only, never plans.
        vol = self.client("vol.db", server.url, self.tokens["vol-noord"])
        self.synced(vol)
        self.assertEqual([d.kind for d in vol.list_documents(None, None)], [bc.DocumentKind.ACTIVITEIT])

    def test_killed_process_keeps_the_edit_and_syncs_it_later(self):
        """An edit that returned survives SIGKILL of the app process and syncs later."""
        server = self.fx.start()
        path = self.fx.path("killed.db")
        child = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("kill_child.py")), path, server.url,
             self.tokens["prof-noord"]],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            line = child.stdout.readline().decode().strip()
            child.send_signal(signal.SIGKILL)  # right after the operation returned
            child.wait(timeout=h.WAIT)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait(timeout=h.WAIT)
        errors = child.stderr.read().decode()
        child.stdout.close()
        child.stderr.close()
        self.assertTrue(line.startswith("DONE "), f"child said {line!r}: {errors}")
        plan, goal = line.split()[1:3]
        self.assertEqual(child.returncode, -signal.SIGKILL)

        c = self.client("killed.db", server.url, self.tokens["prof-noord"], start_online=False)
        d = h.doc(c, plan)
        self.assertEqual([g["id"] for g in d["goals"]], [goal])
        self.assertGreater(c.status().pending_changes, 0)
        c.go_online()
        self.synced(c)
        self.assertEqual(self.fx.doc_heads(plan), c.heads(plan))

    def test_encrypted_at_rest_and_wrong_key(self):
        """The SQLite files never hold a distinctive string of a plan; a wrong key is a
        clear typed error, not garbage."""
        secret = "Zonnebloemstraat-42-geheim-7f3a9"
        path = self.fx.path("rest.db")
        c = self.client("rest.db", "ws://127.0.0.1:9/sync", self.tokens["prof-noord"], start_online=False)
        plan = c.create_plan("noord", secret)
        c.add_goal(plan, bc.Leefdomein.GEZONDHEID, f"huisarts bellen over {secret}")
        c.add_contact_moment(plan, "2026-03-03", bc.ContactKind.TELEFOON, secret, None)
        self.assertIn(secret, c.get_json(plan))

        def files():
            return [p for p in Path(path).parent.iterdir() if p.name.startswith("rest.db")]

        needle = secret.encode()
        self.assertTrue(any(p.name.endswith("-wal") for p in files()), [p.name for p in files()])
        for p in files():  # while open: main file, -wal and -shm
            self.assertNotIn(needle, p.read_bytes(), p.name)
        self.close(c)
        self.assertTrue(files())
        for p in files():
            self.assertNotIn(needle, p.read_bytes(), p.name)

        with self.assertRaises(bc.ClientError.WrongKey) as wrong:
            h.open_client(path, "ws://127.0.0.1:9/sync", self.tokens["prof-noord"], False, key_byte=8)
        self.assertIn("wrong encryption key", str(wrong.exception))
        with self.assertRaises(bc.ClientError.InvalidKey):
            bc.BuurtClient.open(path, b"short", "ws://127.0.0.1:9/sync", "t")
        # The right key still opens it, with everything there.
        again = self.client("rest.db", "ws://127.0.0.1:9/sync", self.tokens["prof-noord"], start_online=False)
        self.assertEqual(h.doc(again, plan)["household"]["pseudonym"], secret)

    def test_typed_errors_cross_the_ffi(self):
        """Bad input and unknown ids are typed errors with clear messages."""
        c = self.client("err.db", "ws://127.0.0.1:9/sync", self.tokens["prof-noord"], start_online=False)
        plan = c.create_plan("noord", "HH-E")
        act = c.create_activiteit("noord", "Moestuin", None, None)
        with self.assertRaises(bc.ClientError.InvalidInput) as e:
            c.add_contact_moment(plan, "2026-02-30", bc.ContactKind.SCHOOL, "x", None)
        self.assertIn("2026-02-30", str(e.exception))
        with self.assertRaises(bc.ClientError.InvalidInput):
            c.create_plan("Noord!", "HH")
        with self.assertRaises(bc.ClientError.WrongDocument):
            c.add_goal(act, bc.Leefdomein.WONEN, "geen plan")
        with self.assertRaises(bc.ClientError.WrongDocument):
            c.update_goal(plan, "no-such-goal", bc.GoalStatus.BEHAALD, None)
        with self.assertRaises(bc.ClientError.InvalidInput):
            c.add_session(act, bc.SessionInput(date="2026-03-01", attendance=3, volunteer_hours=-1.0, notes=None, signals=[], participants=[]))
        with self.assertRaises(bc.ClientError.InvalidInput):
            c.get_json("not-an-id")
        other = self.client("other.db", "ws://127.0.0.1:9/sync", self.tokens["prof-noord"], start_online=False)
        foreign = other.create_plan("noord", "HH-elders")
        with self.assertRaises(bc.ClientError.NotFound):
            c.get_json(f"automerge:{foreign}")
        # Nothing of the refused edits was stored.
        self.assertEqual(h.doc(c, plan)["contacts"], [])
        self.assertEqual(h.doc(c, act)["sessions"], [])
        self.assertEqual(c.status().pending_changes, 2)

    def test_revocation_purges_and_reports(self):
        """After the grant is removed, the device purges the wijk's documents and tells
        the app: live (doc-unavailable) and after being offline (listing)."""
        server = self.fx.start()
        a = self.client("a.db", server.url, self.tokens["prof-noord"])
        docs = {a.create_plan("noord", "HH-R1"), a.create_activiteit("noord", "Buurtsoep", None, None)}
        self.synced(a)
        # No listing polls after connecting: only the server's doc-unavailable can purge.
        live = self.client("live.db", server.url, self.tokens["prof2-noord"], discovery_ms=600_000)
        away = self.client("away.db", server.url, self.tokens["prof2-noord"])
        events = h.Recorder()
        live.set_listener(events)
        self.synced(live, away)
        self.assertEqual(h.held(live), docs)
        self.close(away)

        self.fx.admin("ungrant", "prof2-noord", "professional", "--wijk", "noord")
        self.assertTrue(h.wait_until(lambda: set(events.purged()) == docs), events.purged())
        self.assertEqual(set(events.purged().values()), {bc.PurgeReason.UNAVAILABLE})
        self.assertEqual(h.held(live), set())
        with self.assertRaises(bc.ClientError.NotFound):
            live.get_json(next(iter(docs)))

        away = self.client("away.db", server.url, self.tokens["prof2-noord"], start_online=False)
        away_events = h.Recorder()
        away.set_listener(away_events)
        self.assertEqual(h.held(away), docs)  # still there while offline
        away.go_online()
        self.assertTrue(h.wait_until(lambda: set(away_events.purged()) == docs), away_events.purged())
        self.assertEqual(h.held(away), set())
        self.assertEqual(set(away_events.purged().values()), {bc.PurgeReason.NO_LONGER_LISTED})
        self.close(away)
        reopened = self.client("away.db", server.url, self.tokens["prof2-noord"], start_online=False)
        self.assertEqual(h.held(reopened), set())

    def test_erasure_purges_live_and_stale_devices(self):
        """An erased plan is purged from a live device and from one that comes back
        later, and the stale device cannot bring it back."""
        server = self.fx.start()
        a = self.client("a.db", server.url, self.tokens["prof-noord"], discovery_ms=600_000)
        events = h.Recorder()
        a.set_listener(events)
        plan = a.create_plan("noord", "HH-Vergeten")
        keep = a.create_plan("noord", "HH-Blijft")
        self.synced(a)
        stale = self.client("stale.db", server.url, self.tokens["prof2-noord"])
        self.synced(stale)
        stale.go_offline()
        stale.add_goal(plan, bc.Leefdomein.OVERIG, "offline edit of a plan about to be erased")

        self.fx.admin("erase", plan, "--by", "functionaris-gegevensbescherming")
        self.assertTrue(h.wait_until(lambda: plan in events.purged()), events.purged())
        self.assertEqual(h.held(a), {keep})

        stale_events = h.Recorder()
        stale.set_listener(stale_events)
        stale.go_online()
        self.assertTrue(h.wait_until(lambda: plan in stale_events.purged()), stale_events.purged())
        self.assertEqual(h.held(stale), {keep})
        self.synced(stale)

    def test_reconnects_after_server_restart_and_acks_after_commit(self):
        """With the server stopped and restarted on the same port, the client reconnects
        by itself; pending changes reach zero only once the server committed them."""
        server = self.fx.start()
        port = server.addr.rsplit(":", 1)[1]
        c = self.client("r.db", server.url, self.tokens["prof-noord"])
        events = h.Recorder()
        c.set_listener(events)
        plan = c.create_plan("noord", "HH-Restart")
        self.synced(c)

        server.stop()
        self.assertTrue(h.wait_until(lambda: not c.status().online), c.status())
        c.add_goal(plan, bc.Leefdomein.DAGBESTEDING, "Vrijwilligerswerk zoeken")
        c.add_action(plan, bc.ActionWho.INWONER, "Bellen met het vrijwilligerspunt", None, "2026-04-01")
        pending = c.status().pending_changes
        self.assertEqual(pending, 2)
        time.sleep(1.0)  # several reconnect attempts fail meanwhile
        self.assertEqual(c.status().pending_changes, 2)
        self.assertFalse(c.status().online)
        self.assertNotEqual(self.fx.doc_heads(plan), c.heads(plan))

        server2 = self.fx.start(listen=f"127.0.0.1:{port}")
        self.assertTrue(h.wait_until(lambda: c.status().pending_changes == 0), c.status())
        # Zero pending means committed: the server's database has exactly our heads.
        self.assertEqual(self.fx.doc_heads(plan), c.heads(plan))
        self.assertTrue(c.status().online)
        self.assertTrue(events.saw_online(False) and events.saw_online(True))
        server2.stop()


if __name__ == "__main__":
    unittest.main()
