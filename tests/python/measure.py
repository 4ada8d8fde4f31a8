"""Measures the client library against a real local server (not a test: no assertions
on time). Prints: time to create-and-acknowledge N plans, time for a fresh device to
discover and receive all N, time to reopen a store of N plans, and the latency of one
persisted edit. Usage: python3 tests/python/measure.py [N]   (default 600, the plans
of one wijk in the "assen" workload)."""

import statistics
import sys
import time

import harness as h
from harness import bc


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    fx = h.Fixture()
    try:
        tokens = fx.seed()
        server = fx.start()
        a = h.open_client(fx.path("a.db"), server.url, tokens["prof-noord"])
        t0 = time.monotonic()
        ids = []
        for i in range(n):
            plan = a.create_plan("noord", f"HH-{i:04}")
            a.add_goal(plan, bc.Leefdomein.WONEN, "Huurachterstand oplossen")
            ids.append(plan)
        created = time.monotonic() - t0
        assert a.wait_for_sync(600_000), a.status()
        acked = time.monotonic() - t0
        print(f"{n} plans created with a goal each: {created:.2f} s; all acknowledged after {acked:.2f} s")

        latencies = []
        for i in range(200):
            t = time.perf_counter()
            a.add_contact_moment(ids[i % n], "2026-03-02", bc.ContactKind.HUISBEZOEK, "bezoek", None)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        print(f"one persisted edit (add_contact_moment), 200 runs: median {statistics.median(latencies):.2f} ms, "
              f"p95 {latencies[189]:.2f} ms")
        assert a.wait_for_sync(600_000), a.status()

        t0 = time.monotonic()
        fresh = h.open_client(fx.path("fresh.db"), server.url, tokens["prof2-noord"])
        assert fresh.wait_for_sync(600_000), fresh.status()
        held = len(fresh.list_documents(None, None))
        print(f"fresh device: discovered and received {held} plans in {time.monotonic() - t0:.2f} s")
        fresh.close()

        t0 = time.monotonic()
        again = h.open_client(fx.path("fresh.db"), server.url, tokens["prof2-noord"], start_online=False)
        print(f"reopening a store of {len(again.list_documents(None, None))} plans: {time.monotonic() - t0:.2f} s")
        again.close()
        a.close()
        server.stop()
    finally:
        fx.cleanup()


if __name__ == "__main__":
    main()
