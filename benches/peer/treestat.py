"""Sample a process tree from /proc while a load runs: the peak of the sum
of RSS over the process and all its descendants (gunicorn's master and
workers, or the one `atom run` process), and the CPU time the tree used.

    python treestat.py PID OUT.json [INTERVAL_S]

Runs until SIGTERM or SIGINT (or until PID exits), then writes
{"peak_rss_mib", "samples", "cpu_s", "seconds", "machine_busy_s",
"sampler_cpu_s"} to OUT.json: machine_busy_s is the CPU time every process
on the machine used meanwhile (/proc/stat, all cores, idle and iowait
excluded), to tell how much other work shared the machine. CPU time is
the tree's utime+stime at the end minus at the start, over the processes
alive at both ends plus those born during the run (a worker that exits
during the run takes its CPU time with it; gunicorn's sync workers do not
exit during a load).
"""
import json
import os
import signal
import sys
import time

PID, OUT = int(sys.argv[1]), sys.argv[2]
INTERVAL = float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")


def snapshot():
    """pid -> (ppid, rss bytes, cpu ticks) for every readable process."""
    procs = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the parenthesised command name (which may hold spaces).
        rest = stat[stat.rindex(b")") + 2 :].split()
        ppid, utime, stime, rss = int(rest[1]), int(rest[11]), int(rest[12]), int(rest[21])
        procs[int(name)] = (ppid, rss * PAGE, utime + stime)
    return procs


def machine_busy():
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is inside user)
    return sum(fields[:8]) - fields[3] - fields[4]


def tree(procs):
    children = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [PID]
    while todo:
        pid = todo.pop()
        if pid in procs:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


stop = False


def on_signal(*_):
    global stop
    stop = True


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)

start = time.monotonic()
busy0 = machine_busy()
procs = snapshot()
first_cpu = {pid: procs[pid][2] for pid in tree(procs)}
last_cpu = dict(first_cpu)
peak = samples = 0
while not stop:
    procs = snapshot()
    members = tree(procs)
    if not members:
        break
    peak = max(peak, sum(procs[p][1] for p in members))
    for p in members:
        last_cpu[p] = procs[p][2]
    samples += 1
    time.sleep(INTERVAL)

procs = snapshot()  # the CPU time up to the stop, not up to the last sample
for p in tree(procs):
    last_cpu[p] = procs[p][2]
cpu_ticks = sum(last_cpu[p] - first_cpu.get(p, 0) for p in last_cpu)
busy = machine_busy() - busy0
own = os.times()
with open(OUT, "w") as f:
    json.dump(
        {
            "peak_rss_mib": peak / (1 << 20),
            "samples": samples,
            "cpu_s": cpu_ticks / TICK,
            "seconds": time.monotonic() - start,
            "machine_busy_s": busy / TICK,
            "sampler_cpu_s": own.user + own.system,
        },
        f,
    )
