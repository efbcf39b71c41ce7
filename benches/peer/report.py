"""Print the side-by-side table from the files benches/side-by-side.sh wrote.

    python report.py RESULTS_DIR

RESULTS_DIR holds, per run LABEL (e.g. a-8-atom, c-peer), LABEL.json (the
`atom send --json` summary) and LABEL.mem (benches/peer/treestat.py), plus
env.json (cores, rsa2048 private ops/s, machine, versions, file sizes).
"""
import json
import os
import sys

res = sys.argv[1]
env = json.load(open(os.path.join(res, "env.json")))
SERVERS = [("atom", "atom"), ("peer", "django-pyas2")]
LOADS = [
    ("a", "(a) 10 KiB signed+encrypted, signed sync MDN"),
    ("b", "(b) 1 KiB plain, unsigned sync MDN"),
]


def load(label):
    try:
        with open(os.path.join(res, label + ".json")) as f:
            text = f.read().strip()
        send = json.loads(text) if text else None
    except (OSError, ValueError):
        send = None
    try:
        mem = json.load(open(os.path.join(res, label + ".mem")))
    except (OSError, ValueError):
        mem = None
    return send, mem


def failures(send, signed, count):
    """Messages that did not come back with a positive MDN (and, when signed,
    a verified signed receipt with a matching MIC)."""
    if send is None:
        return count
    bad = send["failed"] + max(0, count - send["sent"])
    if signed:
        bad = max(bad, count - min(send["signed_receipts_verified"], send["mic_verified"]))
    return bad


def others(send, mem):
    """Share of the machine's CPU that processes other than the server, the
    sender and the sampler used during the load (other work on a shared
    machine), in percent."""
    if not mem or "machine_busy_s" not in mem or mem["seconds"] <= 0:
        return "-"
    # The sender's CPU: sending (its summary) plus building the message once
    # (single-threaded, inside the sampled window, not in its summary).
    sender = send["cpu_user_s"] + send["cpu_sys_s"] + send.get("build_ms", 0) / 1000
    own = mem["cpu_s"] + sender + mem["sampler_cpu_s"]
    share = (mem["machine_busy_s"] - own) / (mem["seconds"] * env["cores"])
    OTHERS.append(share)
    return f"{100 * max(share, 0):.0f}%"


OTHERS = []
CPU = {}
rows = []
hdr = f"{'load':<5}{'C':>4}  {'server':<13}{'sent':>6}{'failed':>7}{'msg/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU ms/msg':>11}{'peak MiB':>10}{'atom/peer':>10}{'others':>8}"
print()
print("== side by side: Atom vs django-pyas2 (gunicorn), same loads from `atom send` on loopback")
for key, title in LOADS:
    print(title)
    print(hdr)
    for c in env["concurrency"]:
        rates = {}
        for tag, name in SERVERS:
            label = f"{key}-{c}-{tag}"
            send, mem = load(label)
            count = env["counts"][label]
            bad = failures(send, key == "a", count)
            if send is None:
                print(f"{key:<5}{c:>4}  {name:<13}{count:>6}{bad:>7}   (no result; see {label}.err)")
                continue
            rate = send["ok_per_s"]
            rates[tag] = rate
            cpu = f"{1000 * mem['cpu_s'] / max(send['sent'], 1):.2f}" if mem else "-"
            peak = f"{mem['peak_rss_mib']:.0f}" if mem else "-"
            ratio = ""
            if tag == "peer" and rates.get("peer") and rates.get("atom"):
                ratio = f"{rates['atom'] / rates['peer']:.1f}x"
            print(
                f"{key:<5}{c:>4}  {name:<13}{send['sent']:>6}{bad:>7}{rate:>9.1f}"
                f"{send['latency_ms']['p50']:>9.1f}{send['latency_ms']['p99']:>9.1f}{cpu:>11}{peak:>10}{ratio:>10}"
                f"{others(send, mem):>8}"
            )
            rows.append((key, c, tag, rate))
            if mem:
                CPU.setdefault(key, {}).setdefault(tag, []).append(1000 * mem["cpu_s"] / max(send["sent"], 1))

# Warnings `atom send` raised about receipts it still counted as positive.
warned = {}
for key, _ in LOADS + [("c", "")]:
    for tag, name in SERVERS:
        for c in env["concurrency"] if key != "c" else [None]:
            send, _ = load(f"{key}-{c}-{tag}" if c else f"{key}-{tag}")
            for w in (send or {}).get("warnings", []):
                k = (name, key, w["warning"])
                warned[k] = warned.get(k, 0) + w["count"]
for (name, key, text), n in warned.items():
    print(f"note: {name}, load ({key}): {n} receipts with warning: {text}")

print()
cores, priv = env["cores"], env["rsa_private_per_s"]
bound = priv * cores / 2
print(
    f"RSA bound for (a): rsa2048 {priv:.0f} private ops/s per core x {cores} cores / 2 private ops "
    f"per message = {bound:.0f} msg/s"
)
for c in env["concurrency"]:
    got = {tag: rate for key, cc, tag, rate in rows if key == "a" and cc == c}
    if "atom" in got:
        line = f"  (a) C={c:<3} atom {got['atom']:7.1f} msg/s = {100 * got['atom'] / bound:5.1f}% of the bound"
        if got.get("peer"):
            line += (
                f"; django-pyas2 {got['peer']:6.1f} msg/s = {100 * got['peer'] / bound:4.1f}%;"
                f" atom = {got['atom'] / got['peer']:.1f}x django-pyas2"
            )
        print(line)

# Server CPU per message does not depend much on what else runs on the
# machine, unlike msg/s: the steadier comparison on a shared machine.
for key, title in LOADS:
    got = CPU.get(key, {})
    if got.get("atom") and got.get("peer"):
        a, p = sum(got["atom"]) / len(got["atom"]), sum(got["peer"]) / len(got["peer"])
        print(
            f"server CPU per message, {title[:3]} (mean over C): atom {a:.2f} ms, django-pyas2 {p:.1f} ms"
            f" = {p / a:.1f}x more" + (f"; RSA alone is {2000 / priv:.2f} ms" if key == "a" else "")
        )

print()
size_mib = env["big_bytes"] / (1 << 20)
print(f"(c) one {size_mib:.0f} MiB EDI file, compressed+signed+encrypted, signed sync MDN (count 1)")
print(f"{'server':<14}{'ok':>4}{'seconds':>9}{'MB/s':>8}{'CPU s':>8}{'peak MiB':>10}{'peak/file':>10}{'others':>8}")
for tag, name in SERVERS:
    send, mem = load(f"c-{tag}")
    if send is None:
        print(f"{name:<14}   FAILED (no result; see c-{tag}.err)")
        continue
    ok = send["ok"] == 1 and send["signed_receipts_verified"] == 1 and send["mic_verified"] == 1
    secs = send["latency_ms"]["max"] / 1000
    mbs = env["big_bytes"] / 1e6 / secs if secs else 0
    peak = mem["peak_rss_mib"] if mem else float("nan")
    cpu = f"{mem['cpu_s']:.1f}" if mem else "-"
    print(
        f"{name:<14}{'yes' if ok else 'NO':>4}{secs:>9.2f}{mbs:>8.1f}{cpu:>8}{peak:>10.0f}{peak / size_mib:>9.1f}x"
        f"{others(send, mem):>8}"
    )
    if not ok:
        reason = (send.get("failures") or [{}])[0]
        print(f"  {name} failure: {reason}")

print()
print(f"machine: {env['cpu_model']}, {cores} cores, {env['mem_total']}; {env['openssl']}")
print(f"peer: {env['peer_versions']}, gunicorn --workers {env['workers']} (sync), SQLite")
print(f"load average: {env['loadavg_start']} at the start, {env['loadavg_end']} at the end", end="")
if OTHERS and max(OTHERS) > 0.1:
    print(
        f"; other processes used up to {100 * max(OTHERS):.0f}% of the machine during a load "
        "(column others): the machine was shared, so treat those rows with care"
    )
else:
    print("; the machine was otherwise idle during the loads")
print(
    "notes: msg/s counts positive MDNs only; CPU = server process tree CPU time during the load "
    "/ messages; peak = max summed RSS of the server's process tree (sampled every 100 ms) during the "
    "load; others = CPU share of the whole machine used by processes other than the server, the sender and the sampler; the sender (`atom send`) shares the same cores."
)
