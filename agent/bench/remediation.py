"""Remediation benchmark driver: injects each fault N times into a running health-agent with
simulated devices (the embedded default's ladders, at its 1 s poll) and measures, per fault,
MTTD (fault to the condition first seen through agent-ctl, polled back to back) and MTTR
(fault to the ladder's verified end, from the audit log's `ladder-end` entry, in ms), with the
steps each ladder took.

Run through agent/bench/remediation.sh, which builds the release binaries and starts the
agent. Prints figures; asserts nothing.
"""

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime


def parse_time(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


class Agent:
    def __init__(self, ctl, socket, audit):
        self.ctl_bin, self.endpoint, self.audit = ctl, f"unix://{socket}", audit

    def ctl(self, *args, check=True):
        out = subprocess.run(
            [self.ctl_bin, "--endpoint", self.endpoint, *args],
            capture_output=True, text=True, timeout=60,
        )
        if check and out.returncode != 0:
            raise RuntimeError(f"agent-ctl {args}: {out.stderr.strip()}")
        return out.stdout

    def device(self, dev):
        return json.loads(self.ctl("--json", "device", dev))

    def entries(self):
        with open(self.audit) as f:
            return [json.loads(line) for line in f if line.strip()]


def wait(what, limit, check, every=0.05):
    t0 = time.time()
    while time.time() - t0 < limit:
        r = check()
        if r:
            return r
        time.sleep(every)
    raise RuntimeError(f"timed out after {limit} s waiting for {what}")


def quiet(agent, dev, codes):
    """Until the device shows none of `codes` and no ladder of ours is under way."""
    def ok():
        d = agent.device(dev)
        if any(c["code"] in codes for c in d.get("conditions", [])):
            return False
        mine = [e for e in agent.entries() if e.get("target") == dev
                and str(e.get("caller", "")).startswith("policy:")
                and e.get("action") in ("ladder-start", "ladder-end")]
        return not mine or mine[-1]["action"] == "ladder-end"
    wait(f"{dev} quiet", 180, ok, every=0.2)
    # Past healthy_delay (1 s in the bench config): the next fault starts a fresh ladder.
    time.sleep(1.5)


def ladder_after(agent, target, t0, limit):
    """The first ladder-end on `target` after a ladder-start at or after t0, with its steps."""
    def done():
        es = agent.entries()
        start = next((i for i, e in enumerate(es) if e.get("target") == target
                      and e.get("action") == "ladder-start" and parse_time(e["time"]) >= t0 - 0.01), None)
        if start is None:
            return None
        for e in es[start:]:
            if e.get("target") == target and e.get("action") == "ladder-end":
                steps = [re.sub(r"kill-process \d+", "kill-process PID", f"{x['action']}:{x.get('outcome')}") for x in es[start:]
                         if x.get("target", "").startswith(target.split(":")[0]) and x.get("phase") in ("end", "skipped")
                         and str(x.get("caller", "")).startswith("policy:")]
                return e, steps
        return None
    return wait(f"a ladder on {target} to end", limit, done, every=0.1)


def condition_seen(agent, dev, code, t0, limit):
    """When the condition is first seen by polling the agent (agent-ctl prints times to the
    second, too coarse for this): an upper bound, late by at most one poll of ~30 ms."""
    def seen():
        for c in agent.device(dev).get("conditions", []):
            if c["code"] == code and parse_time(c["since"]) >= t0 - 1.0:
                return time.time()
        return None
    return wait(f"{code} on {dev}", limit, seen, every=0.0)


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def device_fault(agent, fault, dev, code, codes):
    quiet(agent, dev, codes)
    t0 = time.time()
    for f in fault.split("+"):
        agent.ctl("inject-fault", dev, f)
    since = condition_seen(agent, dev, code, t0, 120)
    end, steps = ladder_after(agent, dev, t0, 300)
    result = end["args"]["result"]
    mttr = parse_time(end["time"]) - t0
    agent.ctl("inject-fault", dev, "clear")
    if result == "exhausted":
        agent.ctl("enable", dev)
        agent.ctl("remediation", "clear", dev)
    return since - t0, mttr, result, steps


def stuck_process(agent, fake, max_runtime):
    p = subprocess.Popen([fake, "300"])
    try:
        t_fault = time.time() + max_runtime
        subject = f"process:ngspice:{p.pid}"
        def cond():
            st = json.loads(agent.ctl("--json", "status"))
            for c in st.get("host", {}).get("conditions", []):
                if c["code"] == "PROCESS_STUCK" and c["subject"] == subject:
                    return time.time()
            return None
        since = wait("PROCESS_STUCK", 60, cond, every=0.0)
        end, steps = ladder_after(agent, subject, t_fault - 1, 120)
        return since - t_fault, parse_time(end["time"]) - t_fault, end["args"]["result"], steps
    finally:
        p.kill()
        p.wait()


def main():
    bin_dir, socket, audit, fake, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    agent = Agent(os.path.join(bin_dir, "agent-ctl"), socket, audit)
    faults = [
        ("hang", "loihi-0", "DEVICE_UNRESPONSIVE", {"DEVICE_UNRESPONSIVE", "RESET_FAILED"}),
        ("overheat", "loihi-0", "THERMAL_WARNING", {"THERMAL_WARNING", "THERMAL_CRITICAL"}),
        ("drift", "xbar-0", "CALIBRATION_DRIFT", {"CALIBRATION_DRIFT", "CALIBRATION_STALE"}),
        ("failing-reset+hang", "loihi-0", "DEVICE_UNRESPONSIVE", {"DEVICE_UNRESPONSIVE", "RESET_FAILED", "REMEDIATION_EXHAUSTED", "DEVICE_DISABLED"}),
    ]
    rows = []
    for fault, dev, code, codes in faults:
        d, r, res, used = [], [], Counter(), Counter()
        for i in range(n):
            mttd, mttr, result, steps = device_fault(agent, fault, dev, code, codes)
            d.append(mttd), r.append(mttr), res.update([result]), used.update([" -> ".join(steps)])
            print(f"{fault:20s} {i + 1:2d}/{n}: MTTD {mttd:5.2f} s  MTTR {mttr:6.2f} s  {result:9s} {' -> '.join(steps)}", flush=True)
        rows.append((fault, dev, d, r, res, used))
    d, r, res, used = [], [], Counter(), Counter()
    for i in range(n):
        mttd, mttr, result, steps = stuck_process(agent, fake, 2.0)
        d.append(mttd), r.append(mttr), res.update([result]), used.update([" -> ".join(steps)])
        print(f"{'stuck process':20s} {i + 1:2d}/{n}: MTTD {mttd:5.2f} s  MTTR {mttr:6.2f} s  {result:9s} {' -> '.join(steps)}", flush=True)
    rows.append(("stuck process", "ngspice", d, r, res, used))

    print()
    # Repair: condition seen to verified end, i.e. MTTR less MTTD (for drift, MTTD is mostly
    # the simulated drift growing to its threshold, not detection).
    print("| fault | device | n | MTTD p50 | MTTD p95 | MTTR p50 | MTTR p95 | repair p50 | repair p95 | ended | steps (most common) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for fault, dev, d, r, res, used in rows:
        steps, count = used.most_common(1)[0]
        ended = ", ".join(f"{k} {v}" for k, v in res.items())
        rep = [b - a for a, b in zip(d, r)]
        print(f"| {fault} | {dev} | {len(d)} | {pct(d, 50):.2f} s | {pct(d, 95):.2f} s | {pct(r, 50):.2f} s "
              f"| {pct(r, 95):.2f} s | {pct(rep, 50):.2f} s | {pct(rep, 95):.2f} s | {ended} | {steps} ({count}/{len(d)}) |")


if __name__ == "__main__":
    main()
