"""Per-exchange instruction counts from two callgrind runs (200 and 1200 exchanges); see
guest-instructions.sh. JIT code shows in callgrind as `???:0x<addr> [???]`."""
import bisect
import collections
import re
import subprocess
import sys

LINE = re.compile(r"\s*([\d,]+) \(.*?\)\s+(.*)")
JIT = re.compile(r"\?\?\?:0x([0-9a-fA-F]+) \[\?\?\?\]$")


def functions(out):
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", out], capture_output=True, text=True, check=True
    ).stdout
    for line in text.splitlines():
        m = LINE.match(line)
        if m:
            yield int(m.group(1).replace(",", "")), m.group(2)


def perf_map(path):
    rows = []
    with open(path) as f:
        for line in f:
            addr, size, name = line.rstrip("\n").split(" ", 2)
            rows.append((int(addr, 16), int(size, 16), re.sub(r"::h[0-9a-f]{16}$", "", name)))
    rows.sort()
    return rows


def tally(out, map_path):
    rows = perf_map(map_path) if map_path else []
    starts = [r[0] for r in rows]
    total, guest, by_fn = 0, 0, collections.Counter()
    for ir, name in functions(out):
        if "PROGRAM TOTALS" in name:
            total = ir
            continue
        m = JIT.search(name)
        if not m:
            continue
        guest += ir
        addr = int(m.group(1), 16)
        i = bisect.bisect_right(starts, addr) - 1
        fn = rows[i][2] if i >= 0 and addr < rows[i][0] + rows[i][1] else "(unnamed)"
        by_fn[fn] += ir
    return total, guest, by_fn


def main():
    wasm, work = sys.argv[1], sys.argv[2]
    profile = "--profile" in sys.argv
    runs = {n: tally(f"{work}/cg.{n}", f"{work}/map.{n}" if profile else None) for n in (200, 1200)}
    (t0, g0, f0), (t1, g1, f1) = runs[200], runs[1200]
    print(f"{wasm}: guest {(g1 - g0) / 1000:.0f} instructions per exchange, all {(t1 - t0) / 1000:.0f}")
    if profile:
        per = {k: (f1[k] - f0.get(k, 0)) / 1000 for k in f1}
        for name, ir in sorted(per.items(), key=lambda kv: -kv[1])[:40]:
            if ir >= 50:
                print(f"  {ir:8.0f}  {name[:120]}")


main()
