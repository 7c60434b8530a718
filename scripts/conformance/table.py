#!/usr/bin/env python3
"""Print the pass/fail table for one or more result files written by native.py / upstream.py.

    table.py [--markdown] RESULTS.json...
"""
from __future__ import annotations

import argparse
import json
import sys

MARK = {"pass": "pass", "fail": "FAIL", "skip": "skip", "timeout": "TIMEOUT", "error": "ERROR"}


def load(paths: list[str]) -> tuple[list[str], list[dict]]:
    suites, runs = [], []
    for p in paths:
        d = json.load(open(p))
        suites.append(d.get("suite", "?"))
        runs.extend(d["runs"])
    return suites, runs


def render(runs: list[dict], markdown: bool = False) -> str:
    names: list[str] = []
    for r in runs:
        for n in r.get("results", {}):
            if n not in names:
                names.append(n)
    labels = [r["runtime"] for r in runs]
    w = max([len(n) for n in names] + [len("test"), len("TOTAL")])
    cw = max([len(lb) for lb in labels] + [8])
    lines = []
    if markdown:
        lines.append("| test | " + " | ".join(labels) + " |")
        lines.append("|---|" + "---|" * len(labels))
    else:
        lines.append(f"{'test':<{w}}  " + "  ".join(f"{lb:>{cw}}" for lb in labels))
        lines.append("-" * (w + (cw + 2) * len(labels)))
    for n in names:
        cells = [MARK.get(r.get("results", {}).get(n, {}).get("status", "-"), "-") for r in runs]
        if markdown:
            lines.append(f"| {n} | " + " | ".join(cells) + " |")
        else:
            lines.append(f"{n:<{w}}  " + "  ".join(f"{c:>{cw}}" for c in cells))
    totals = []
    for r in runs:
        res = r.get("results", {})
        if r.get("error"):
            totals.append(r["error"])
            continue
        count = {k: sum(1 for v in res.values() if v["status"] == k) for k in MARK}
        t = f"{count['pass']}/{len(res)} passed"
        extra = [f"{count[k]} {k}" for k in ("fail", "timeout", "error", "skip") if count[k]]
        totals.append(t + (" (" + ", ".join(extra) + ")" if extra else ""))
    if markdown:
        lines.append("| **TOTAL** | " + " | ".join(totals) + " |")
    else:
        lines.append("-" * (w + (cw + 2) * len(labels)))
        for lb, t in zip(labels, totals, strict=True):
            lines.append(f"TOTAL {lb}: {t}")
    return "\n".join(lines)


def failures(runs: list[dict]) -> str:
    out = []
    for r in runs:
        for n, v in r.get("results", {}).items():
            if v["status"] not in ("pass", "skip"):
                out.append(f"  {r['runtime']}: {n}: {v['status']}: {v.get('message', '')[:200]}")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()
    suites, runs = load(a.files)
    print(f"suite: {', '.join(sorted(set(suites)))}")
    print(render(runs, a.markdown))
    f = failures(runs)
    if f:
        print("\nfailures:\n" + f)
    bad = any(v["status"] not in ("pass", "skip") for r in runs for v in r.get("results", {}).values())
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
