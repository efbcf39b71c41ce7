"""Write a synthetic X12 850 purchase order of exactly SIZE bytes: one
interchange, line items (PO1/PID segments) with varying quantities, prices
and part numbers, so that it compresses roughly like real EDI rather than
like random bytes or one repeated line. Deterministic (fixed seed).

    python edi_payload.py SIZE OUT
"""
import random
import sys

size, out = int(sys.argv[1]), sys.argv[2]
rng = random.Random(850)
head = (
    "ISA*00*          *00*          *ZZ*BENCH-PARTNER  *ZZ*BENCH-ORG      "
    "*261123*1200*U*00401*000000850*0*P*>~\n"
    "GS*PO*BENCH-PARTNER*BENCH-ORG*20261123*1200*850*X*004010~\n"
    "ST*850*0001~\nBEG*00*SA*PO-4711**20261123~\n"
)
tail = "CTT*{n}~\nSE*{segs}*0001~\nGE*1*850~\nIEA*1*000000850~\n"
parts, length, n = [head], len(head), 0
budget = size - len(tail.format(n=10**9, segs=10**9))
words = ["WIDGET", "BRACKET", "BOLT", "NUT", "WASHER", "PANEL", "HINGE", "SPRING", "GASKET", "VALVE"]
while True:
    n += 1
    seg = (
        f"PO1*{n}*{rng.randint(1, 9999)}*EA*{rng.randint(1, 99999) / 100:.2f}**BP*"
        f"{rng.randint(100000, 999999)}-{rng.choice('ABCDEFGH')}*VP*V{rng.randint(10000, 99999)}~\n"
        f"PID*F****{rng.choice(words)} {rng.choice(words)} {rng.randint(1, 500)}MM~\n"
    )
    if length + len(seg) > budget:
        n -= 1
        break
    parts.append(seg)
    length += len(seg)
end = tail.format(n=n, segs=2 * n + 3)
data = "".join(parts) + end
data += "\n" * (size - len(data))  # pad to the exact size (trailing newlines)
assert len(data) == size, (len(data), size)
with open(out, "w", encoding="ascii", newline="") as f:
    f.write(data)
