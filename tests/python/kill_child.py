"""Child process of test_killed_process_keeps_the_edit_and_syncs_it_later: opens a store
offline, makes an edit, says DONE the moment the call returned, and waits to be killed."""

import sys
import time

import harness as h
from harness import bc

path, url, token = sys.argv[1:4]
client = h.open_client(path, url, token, start_online=False)
plan = client.create_plan("noord", "HH-Kill")
goal = client.add_goal(plan, bc.Leefdomein.VEILIGHEID, "Veiligheidsplan opstellen")
print(f"DONE {plan} {goal}", flush=True)
time.sleep(60)  # the parent kills us long before this
