"""Activiteit: a volunteer logs a session of a group activity (attendance, volunteer
hours, notes, a signal for the buurtteam) on their phone, partly offline; the
professional who organises it sees the merged result.

Runs on the generated Python bindings and the real library against a local server."""

import asyncio
import json
import sys

from device_session import DeviceSession, invite_volunteer
from local_server import LocalServer, device_key
import buurtsync_client as bc


async def main():
    with LocalServer("oost", [("fatima", "professional"), ("carla", "coordinator")]) as server:
        office = server.open_client("fatima.db", "fatima")
        # Carla, the coordinator, invites Joop on /beheer and shows him the code; his
        # phone exchanges it for a device session, which keeps the library supplied
        # with short-lived access tokens (the credentials provider).
        code = invite_volunteer(server.base, server.tokens["carla"], "oost", "Joop")
        session = DeviceSession.enrol(server.base, code, "Joop's telefoon")
        print(f"Carla invited Joop: code {code}; his phone signed in as {session.user}.")
        joop = server.open_enrolled("joop.db", session)
        try:
            act = await office.create_activiteit("oost", "Koffieochtend De Kiem", "ontmoeting", "Wijkcentrum De Kiem")
            await office.create_plan("oost", "HH-Visser")  # a plan: volunteers never receive it
            assert await office.wait_for_sync(30_000), office.status()
            print("Fatima created the activiteit (and a household plan).")

            assert await joop.wait_for_sync(30_000), joop.status()
            held = await joop.list_documents(None, None)
            print(f"Joop's phone holds: {[(d.kind.name, d.label) for d in held]}")
            if [d.kind for d in held] != [bc.DocumentKind.ACTIVITEIT]:
                print("a volunteer must hold the activiteit and no plan", file=sys.stderr)
                return 1

            joop.go_offline()
            session = await joop.add_session(act, bc.SessionInput(
                date="2026-03-10", attendance=14, volunteer_hours=2.5,
                notes="Gezellige ochtend, nieuwe bezoekers uit de Esstraat",
                signals=["Meneer K. oogt eenzaam en vroeg naar hulp bij formulieren"],
                participants=[],
            ))
            print(f"\nJoop logged session {session} offline: pending={joop.status().pending_changes}")
            joop.go_online()
            assert await joop.wait_for_sync(30_000), joop.status()
            print(f"Back online: pending={joop.status().pending_changes}")

            async def arrived():
                return json.loads(await office.get_json(act))["sessions"]

            for _ in range(200):
                if await arrived():
                    break
                await office.wait_for_sync(200)
            sessions = await arrived()
            print("\nThe activiteit as Fatima sees it:")
            for s in sessions:
                print(f"  {s['date']}: {s['attendance']} bezoekers, {s['volunteer_hours']} vrijwilligersuren")
                print(f"    notes: {s.get('notes')}")
                for signal in s["signals"]:
                    print(f"    signaal voor het buurtteam: {signal}")
            if len(sessions) != 1 or sessions[0]["attendance"] != 14:
                print(f"expected Joop's session, got {sessions}", file=sys.stderr)
                return 1
            return 0
        finally:
            office.shutdown()
            joop.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
