"""A device session for an app on the client library (issue 17): sign in once with an
enrolment code (or an OIDC token), then let the library ask for fresh access tokens.

    session = DeviceSession.enrol("https://buurt.example", "ABCD-EFGH", "Joop's telefoon")
    client = bc.BuurtClient.open_with_options(path, key, url, session.access_token, options)
    client.set_credentials_provider(session)

`fresh_token` is the library's `CredentialsProvider` callback: it returns the cached
access token while it has more than `margin` seconds left, and otherwise rotates the
refresh token at `POST /api/v1/session/refresh`. A refresh token is used once: the
answer's new one replaces it (a reused refresh token ends the whole session, the
standard rotation rule). A refused refresh means signed out: `fresh_token` returns None
and the library reports `Unauthorized`; `signed_out` tells the app to ask for a new
code. A real app keeps `refresh_token` in the platform's secure storage.

Standard library only (urllib), like the rest of the examples."""

import json
import threading
import time
import urllib.error
import urllib.request

import buurtsync_client as bc


def http_base(server_url):
    """`ws://host:port/sync` or `wss://…` → `http://host:port` or `https://…`."""
    base = server_url.split("/sync")[0]
    return base.replace("wss://", "https://", 1).replace("ws://", "http://", 1)


def post_json(url, body, timeout=30):
    """POSTs JSON; returns (status, decoded JSON body or {})."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as e:
        try:
            return e.code, json.loads(e.read() or b"{}")
        except ValueError:
            return e.code, {}


class SignInRefused(Exception):
    """The server refused the enrolment code or identity token (its reason attached)."""


class DeviceSession(bc.CredentialsProvider):
    def __init__(self, base, answer, margin=30):
        self.base = base
        self.margin = margin
        self.refreshes = 0
        self.signed_out = False
        self._lock = threading.Lock()
        self._take(answer)

    @classmethod
    def enrol(cls, base, code, device_name, margin=30):
        """Exchanges a coordinator's enrolment code for a device session."""
        status, answer = post_json(
            f"{base}/api/v1/session", {"enrolment_code": code, "device_name": device_name}
        )
        if status != 200:
            raise SignInRefused(f"{status}: {answer}")
        return cls(base, answer, margin)

    def _take(self, answer):
        self.access_token = answer["access_token"]
        self.refresh_token = answer["refresh_token"]
        self.expires_at = answer["access_token_expires_at"]
        self.user = answer.get("user")

    def fresh_token(self):
        """The library's credentials callback (called on a library thread; may block)."""
        with self._lock:
            if self.signed_out:
                return None
            if self.expires_at - time.time() > self.margin:
                return self.access_token
            status, answer = post_json(
                f"{self.base}/api/v1/session/refresh", {"refresh_token": self.refresh_token}
            )
            if status != 200:
                # session_revoked / invalid_grant: switched off, or the code's person
                # left the wijk. Never retry with the old refresh token.
                self.signed_out = True
                return None
            self._take(answer)
            self.refreshes += 1
            return self.access_token


def invite_volunteer(base, coordinator_token, wijk, name):
    """What a coordinator does on `/beheer`, as a script: log in, invite a volunteer,
    read the enrolment code from the page. For examples and tests; people use the page."""
    import http.cookiejar
    import re
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

    def post_form(path, fields):
        request = urllib.request.Request(
            f"{base}{path}", data=urllib.parse.urlencode(fields).encode(), method="POST",
            # The page's posts are same-origin only (CSRF): say where we come from.
            headers={"Origin": base, "Content-Type": "application/x-www-form-urlencoded"},
        )
        with opener.open(request, timeout=30) as response:
            return response.read().decode()

    post_form("/beheer/login", {"token": coordinator_token})
    page = post_form("/beheer/invite", {"wijk": wijk, "name": name})
    found = re.search(r"\b([2-9A-HJ-NP-Z]{4}-[2-9A-HJ-NP-Z]{4})\b", page)
    if not found:
        raise SignInRefused("no enrolment code on the invitation page")
    return found.group(1)
