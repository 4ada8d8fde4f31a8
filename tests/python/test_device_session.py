"""Identity on the client library (issue 17): a volunteer's phone enrolled with a
coordinator's code, kept signed in by the device session's refresh endpoint through the
library's credentials provider. Generated bindings, the real library, a real server."""

import sys
import unittest

import harness as h
from harness import bc

sys.path.insert(0, str(h.ROOT / "mobile-examples" / "python"))
from device_session import DeviceSession, SignInRefused, http_base, invite_volunteer  # noqa: E402

SYNCED = 30_000  # ms for wait_for_sync


class DeviceSessionTest(unittest.TestCase):
    def setUp(self):
        self.fx = h.Fixture()
        self.tokens = self.fx.seed()
        self.fx.admin("user", "add", "coord-noord")
        self.fx.admin("grant", "coord-noord", "coordinator", "--wijk", "noord")
        self.clients = []

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.fx.cleanup()

    def client(self, name, url, token):
        c = h.open_client(self.fx.path(name), url, token)
        self.clients.append(c)
        return c

    def test_enrolled_phone_refreshes_through_the_provider_and_purges_nothing(self):
        """Access tokens of a few seconds run out while the phone is online: the library
        asks the device session, which rotates its refresh token; nothing is purged, an
        edit made across the expiry is acknowledged, and the code works only once."""
        # Access tokens live 6 s here (10 minutes by default).
        server = self.fx.start(env={"BUURTSYNC_ACCESS_TOKEN_TTL": "6s"})
        base = http_base(server.url)
        office = self.client("office.db", server.url, self.tokens["prof-noord"])
        act = office.create_activiteit("noord", "Buurtsoep", None, None)
        self.assertTrue(office.wait_for_sync(SYNCED), office.status())

        code = invite_volunteer(base, self.fx.token("coord-noord"), "noord", "Vera")
        session = DeviceSession.enrol(base, code, "Vera's telefoon", margin=2)
        with self.assertRaises(SignInRefused):
            DeviceSession.enrol(base, code, "a second phone")

        phone = self.client("phone.db", server.url, session.access_token)
        events = h.Recorder()
        phone.set_listener(events)
        phone.set_credentials_provider(session)
        self.assertTrue(phone.wait_for_sync(SYNCED), phone.status())
        self.assertEqual(h.held(phone), {act})
        first_access, first_refresh = session.access_token, session.refresh_token

        # The server ends the socket when the access token runs out (close 4401); the
        # library asks the provider, which refreshes at the endpoint.
        self.assertTrue(h.wait_until(lambda: session.refreshes >= 2, timeout=60), phone.status())
        logged = phone.add_session(act, bc.SessionInput(
            date="2026-03-10", attendance=9, volunteer_hours=2.0,
            notes="", signals=[], participants=[],
        ))
        self.assertTrue(phone.wait_for_sync(SYNCED), phone.status())
        self.assertEqual(phone.status().pending_changes, 0)
        self.assertNotEqual(session.access_token, first_access)
        self.assertNotEqual(session.refresh_token, first_refresh)
        self.assertFalse(session.signed_out)
        self.assertEqual(events.purged(), {})
        self.assertEqual(self.fx.doc_heads(act), phone.heads(act))

        self.assertTrue(office.wait_for_sync(SYNCED), office.status())
        sessions = h.doc(office, act)["sessions"]
        self.assertIn(logged, [s["id"] for s in sessions])


if __name__ == "__main__":
    unittest.main()
