#!/usr/bin/env python3
"""Markdown report for bench/compare/run.sh: medians, ratios and issue #6's goals.

usage: report.py RAW.tsv META.tsv FAILURES.txt > result.md
RAW.tsv rows: round, backing (tmpfs|disk|keyd|all), system, metric, value.
META.tsv rows: key, value (machine details and run parameters).
"""
import statistics
import sys
from collections import defaultdict

PEERS = ("gocryptfs", "securefs")
SYSTEMS = ("native", "bindfs", "gocryptfs", "securefs", "kmsfs")

# metric -> (label, unit, higher_is_better, how samples combine)
METRICS = [
    ("seq_write_mibs", "sequential write, 1 MiB writes + fsync", "MiB/s", True, "median"),
    ("seq_read_mibs", "sequential read, cold", "MiB/s", True, "median"),
    ("rand_read_iops", "random 4 KiB read (fio psync, qd 1)", "IOPS", True, "median"),
    ("rand_write_iops", "random 4 KiB write (fio psync, qd 1)", "IOPS", True, "median"),
    ("untar_s", "untar the tree", "s", False, "median"),
    ("ls_lR_s", "ls -lR, cold", "s", False, "median"),
    ("read_all_s", "read every file, cold", "s", False, "median"),
    ("rm_rf_s", "rm -rf the tree", "s", False, "median"),
    ("daemon_cpu_s", "FUSE daemon CPU per 512 MiB written", "s", False, "median"),
    ("daemon_hwm_mib", "FUSE daemon peak RSS (VmHWM)", "MiB", False, "max"),
]


def goal(backing, metric, k, r_peer, r_bind):
    """(goal text, met: True/False/None) for issue #6; None = not computable."""
    def both(*conds):
        return None if any(c is None for c in conds) else all(conds)

    def ge(x, lim):
        return None if x is None else x >= lim

    def le(x, lim):
        return None if x is None else x <= lim

    if backing == "disk":
        if metric == "rand_write_iops":
            return "≥ 3× faster peer", ge(r_peer, 3.0)
        return "", None
    table = {
        "seq_write_mibs": ("≥ 1.5× faster peer, ≥ 0.8× bindfs", lambda: both(ge(r_peer, 1.5), ge(r_bind, 0.8))),
        "seq_read_mibs": ("≥ 1.5× faster peer, ≥ 0.7× bindfs", lambda: both(ge(r_peer, 1.5), ge(r_bind, 0.7))),
        "rand_read_iops": ("≥ 1.2× faster peer", lambda: ge(r_peer, 1.2)),
        "rand_write_iops": ("≥ 1.2× faster peer", lambda: ge(r_peer, 1.2)),
        "untar_s": ("≤ 0.8× faster peer's time", lambda: le(r_peer, 0.8)),
        "ls_lR_s": ("≤ 0.8× faster peer's time", lambda: le(r_peer, 0.8)),
        "read_all_s": ("≤ 1.0× faster peer's time", lambda: le(r_peer, 1.0)),
        "rm_rf_s": ("≤ 0.8× faster peer's time", lambda: le(r_peer, 0.8)),
        "daemon_cpu_s": ("kmsfs ≤ 0.7 s", lambda: le(k, 0.7)),
        "daemon_hwm_mib": ("kmsfs ≤ 64 MiB", lambda: le(k, 64.0)),
    }
    if metric not in table:
        return "", None
    text, fn = table[metric]
    return text, fn()


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "IOPS" or (unit == "MiB/s" and v >= 100):
        return f"{v:,.0f}"
    if unit == "s":
        return f"{v:.2f}" if v >= 0.1 else f"{v:.3f}"
    return f"{v:.1f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def met_text(m):
    return {True: "**yes**", False: "no", None: "n/a"}[m]


def main():
    raw_path, meta_path, fail_path = sys.argv[1:4]
    samples = defaultdict(list)  # (backing, system, metric) -> [(round, value)]
    for line in open(raw_path):
        parts = line.rstrip("\n").split("\t")
        if len(parts) != 5:
            continue
        rnd, backing, system, metric, value = parts
        try:
            samples[(backing, system, metric)].append((rnd, float(value)))
        except ValueError:
            continue
    meta = {}
    for line in open(meta_path):
        k, _, v = line.rstrip("\n").partition("\t")
        meta[k] = v
    failures = [l.rstrip("\n") for l in open(fail_path) if l.strip()]

    def agg(backing, system, metric, how="median"):
        vals = [v for _, v in samples.get((backing, system, metric), [])]
        if not vals:
            return None
        return max(vals) if how == "max" else statistics.median(vals)

    systems = [s for s in meta.get("systems", " ".join(SYSTEMS)).split() if s in SYSTEMS]
    backings = [b for b in meta.get("backings", "tmpfs disk").split() if b in ("tmpfs", "disk")]
    out = []
    w = out.append
    w(f"# kmsfs beside native, bindfs, gocryptfs and securefs — {meta.get('started', '?')}")
    w("")
    w(f"`bench/compare/run.sh` ({meta.get('mode', '?')} mode), {meta.get('rounds', '?')} round(s), systems "
      "interleaved round by round; medians of the rounds (peak RSS: the maximum). "
      f"Total runtime {meta.get('runtime_s', '?')} s. How to read it: `docs/benchmarks.md`.")
    w("")
    w("| machine | |")
    w("|---|---|")
    for k, label in [("cpu", "CPU"), ("cores", "cores"), ("ram", "RAM"), ("kernel", "kernel"),
                     ("os", "OS"), ("disk", "disk backing store"),
                     ("keyd_state", "kmsfs-keyd state (both rows)"), ("load", "load average"),
                     ("kmsfs", "kmsfs commit"), ("pkg_gocryptfs", "gocryptfs"),
                     ("pkg_securefs", "securefs (format 4, its default; PBKDF2 for the password)"),
                     ("pkg_bindfs", "bindfs (`-o big_writes`)"), ("pkg_fio", "fio"),
                     ("pkg_fuse3", "fuse3"), ("pkg_libfuse2", "libfuse2 (bindfs, securefs)"),
                     ("tree", "untar tree"), ("readahead", "read_ahead_kb of each mount")]:
        if k in meta:
            w(f"| {label} | {meta[k]} |")
    w(f"| sizes | sequential {meta.get('seq_mib', '?')} MiB, random file {meta.get('rand_mib', '?')} MiB, "
      f"fio {meta.get('fio_s', '?')} s per workload, keyd_bench {meta.get('keyd_s', '?')} s per measurement |")
    w("")

    for backing in backings:
        where = ("tmpfs (RAM) backing store" if backing == "tmpfs" else
                 f"disk backing store ({meta.get('disk', '?')})")
        w(f"## {where}; kmsfs-keyd state on the disk, durable audit")
        w("")
        head = "| workload | unit | " + " | ".join(systems) + " | kmsfs ÷ faster peer | kmsfs ÷ bindfs | goal (#6) | met |"
        w(head)
        w("|---|---|" + "---:|" * len(systems) + "---:|---:|---|---|")
        for metric, label, unit, higher, how in METRICS:
            vals = {s: agg(backing, s, metric, how) for s in systems}
            if all(v is None for v in vals.values()):
                continue
            k = vals.get("kmsfs")
            peer_vals = [vals.get(p) for p in PEERS if vals.get(p) is not None]
            faster = None
            if peer_vals:
                faster = max(peer_vals) if higher else min(peer_vals)
            r_peer = ratio(k, faster) if metric not in ("daemon_hwm_mib",) else None
            r_bind = ratio(k, vals.get("bindfs")) if metric not in ("daemon_hwm_mib",) else None
            text, met = goal(backing, metric, k, r_peer, r_bind)
            better = "higher is better" if higher else "lower is better"
            cells = " | ".join(fmt(vals[s], unit) for s in systems)
            rp = f"{r_peer:.2f}×" if r_peer is not None else "n/a"
            rb = f"{r_bind:.2f}×" if r_bind is not None else "n/a"
            w(f"| {label} | {unit} ({better}) | {cells} | {rp} | {rb} | {text} | {met_text(met) if text else ''} |")
        kc = agg(backing, "kmsfs", "keyd_cpu_s")
        if kc is not None:
            w("")
            w(f"kmsfs-keyd CPU during the sequential write: {kc:.2f} s per 512 MiB (not in the daemon row).")
        w("")

    w("## kmsfs-keyd alone (keyd_bench over the real socket; state on the disk, durable audit)")
    w("")
    w("| operation | clients | requests/s | p99 µs | goal (#6) | met |")
    w("|---|---:|---:|---:|---|---|")
    for op, name in (("generate_data_key", "GenerateDataKey"), ("decrypt", "Decrypt")):
        for c in (1, 8):
            per_s = agg("keyd", "kmsfs-keyd", f"{op}_c{c}_per_s")
            p99 = agg("keyd", "kmsfs-keyd", f"{op}_c{c}_p99_us")
            text, met = ("", None)
            if op == "decrypt" and c == 8:
                text, met = "≥ 20,000/s", (None if per_s is None else per_s >= 20000)
            w(f"| {name} | {c} | {fmt(per_s, 'IOPS')} | {fmt(p99, 'IOPS')} | {text} | {met_text(met) if text else ''} |")
    w("")
    w("## Peak RSS (VmHWM) over the run")
    w("")
    w("| process | MiB | goal (#6) | met |")
    w("|---|---:|---|---|")
    kh = [agg(b, "kmsfs", "daemon_hwm_mib", "max") for b in backings]
    kh = [v for v in kh if v is not None]
    k_peak = max(kh) if kh else None
    keyd_peak = agg("all", "kmsfs-keyd", "keyd_hwm_mib", "max")
    w(f"| kmsfs (largest of all its mounts) | {fmt(k_peak, 'MiB')} | ≤ 64 MiB | "
      f"{met_text(None if k_peak is None else k_peak <= 64)} |")
    w(f"| kmsfs-keyd (one process for the whole run) | {fmt(keyd_peak, 'MiB')} | ≤ 64 MiB | "
      f"{met_text(None if keyd_peak is None else keyd_peak <= 64)} |")
    w("")
    w("## Failures")
    w("")
    if failures:
        w("A failed step records no figure (its cell shows n/a or a median of the other rounds).")
        w("")
        out.extend(failures)
    else:
        w("None: every step of every round completed.")
    if meta.get("audit_verify"):
        w("")
        w(f"Audit trail after the run (`kmsctl audit verify`): {meta['audit_verify'].strip()}")
    w("")
    w("## Raw samples (one per round)")
    w("")
    w("| backing | system | metric | samples |")
    w("|---|---|---|---|")
    for (backing, system, metric), vals in sorted(samples.items()):
        w(f"| {backing} | {system} | {metric} | {', '.join(f'{v:g}' for _, v in vals)} |")
    print("\n".join(out))


if __name__ == "__main__":
    main()
