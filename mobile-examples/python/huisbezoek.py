"""Huisbezoek: a professional goes offline, edits a household plan at the kitchen table,
comes back at the wijkcentrum and syncs; a colleague's edit made meanwhile merges in.

Runs on the generated Python bindings and the real library against a local server."""

import asyncio
import json
import sys

from local_server import LocalServer, device_key
import buurtsync_client as bc


class Printer(bc.ClientListener):
    def __init__(self, who):
        self.who = who

    def on_status(self, status):
        pass

    def on_changes(self, changes):
        for c in changes:
            print(f"  [{self.who}] document {c.doc_id[:8]}…: {c.change}")


async def main():
    with LocalServer("centrum", [("fatima", "professional"), ("sanne", "professional")]) as server:
        phone = server.open_client("fatima.db", "fatima")
        tablet = server.open_client("sanne.db", "sanne")
        phone.set_listener(Printer("fatima"))
        try:
            plan = await phone.create_plan("centrum", "HH-Bakker")
            await phone.set_plan_status(plan, bc.PlanStatus.INTAKE)
            assert await phone.wait_for_sync(30_000), phone.status()
            print(f"Fatima created plan {plan} and synced it.")
            assert await tablet.wait_for_sync(30_000), tablet.status()
            print(f"Sanne's tablet discovered it: {[d.label for d in await tablet.list_documents(None, None)]}")

            phone.go_offline()
            print("\nAt the kitchen table, no network:")
            goal = await phone.add_goal(plan, bc.Leefdomein.WONEN, "Huurachterstand binnen drie maanden oplossen")
            await phone.add_action(plan, bc.ActionWho.INWONER, "Afspraak maken met de woningcorporatie", goal, "2026-04-01")
            await phone.add_contact_moment(plan, "2026-03-02", bc.ContactKind.HUISBEZOEK,
                                     "Eerste huisbezoek, keukentafelgesprek met mevrouw Bakker", "fatima")
            await phone.add_consent(plan, "gegevens delen met de woningcorporatie", "2026-03-02", "mevrouw Bakker")
            # Outcome monitoring (schema 2): the intake, dated the day it happened, with
            # zelfredzaamheidsmatrix scores and a participatieladder step.
            await phone.change_plan_status(plan, bc.PlanStatus.INTAKE, "2026-03-02", "fatima")
            await phone.add_zrm_measurement(plan, bc.ZrmDomein.FINANCIEN, 2, "2026-03-02", bc.Moment.INTAKE, "fatima")
            await phone.add_zrm_measurement(plan, bc.ZrmDomein.HUISVESTING, 1, "2026-03-02", bc.Moment.INTAKE, "fatima")
            await phone.add_ladder_measurement(plan, 2, "2026-03-02", bc.Moment.INTAKE, "fatima")
            status = phone.status()
            print(f"  online={status.online}, changes not yet on the server: {status.pending_changes}")

            await tablet.add_goal(plan, bc.Leefdomein.FINANCIEN, "Aanmelden bij de schuldhulp")
            # Sanne scores the same household at the office: both scores stay.
            await tablet.add_zrm_measurement(plan, bc.ZrmDomein.SOCIAAL_NETWERK, 3, "2026-03-03",
                                             bc.Moment.INTAKE, "sanne")
            assert await tablet.wait_for_sync(30_000), tablet.status()
            print("Meanwhile Sanne added a financial goal at the office.")

            print("\nBack at the wijkcentrum:")
            phone.go_online()
            assert await phone.wait_for_sync(30_000), phone.status()
            status = phone.status()
            print(f"  online={status.online}, pending={status.pending_changes}, last sync at {status.last_synced_at_ms}")

            merged = json.loads(await phone.get_json(plan))
            print("\nThe merged plan on Fatima's phone:")
            print(f"  status: {merged['status']}")
            for g in merged["goals"]:
                print(f"  goal [{g['leefdomein']}] {g['description']} ({g['status']})")
            for a in merged["actions"]:
                print(f"  action ({a['who']}, due {a.get('due')}): {a['what']}")
            for c in merged["contacts"]:
                print(f"  contact {c['date']} {c['kind']}: {c['summary']}")
            for c in merged["consents"]:
                print(f"  toestemming {c['given_at']}: {c['purpose']}")
            for h in merged["status_history"]:
                print(f"  status {h['status']} since {h['date']}")
            for z in merged["zelfredzaamheid"]:
                print(f"  zelfredzaamheid {z['domain']} = {z['score']} ({z['moment']}, {z['date']})")
            for l in merged["participatieladder"]:
                print(f"  participatieladder trede {l['step']} ({l['moment']}, {l['date']})")
            domains = sorted(g["leefdomein"] for g in merged["goals"])
            if domains != ["financien", "wonen"]:
                print(f"expected both goals, got {domains}", file=sys.stderr)
                return 1
            scored = sorted(z["domain"] for z in merged["zelfredzaamheid"])
            if scored != ["financien", "huisvesting", "sociaal_netwerk"]:
                print(f"expected both professionals' scores, got {scored}", file=sys.stderr)
                return 1
            if [h["date"] for h in merged["status_history"]] != ["2026-03-02"]:
                print(f"expected the dated intake, got {merged['status_history']}", file=sys.stderr)
                return 1
            print("\nBoth professionals' edits are in the plan.")
            return 0
        finally:
            phone.shutdown()
            tablet.shutdown()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
