"""Print the mutation score and the surviving mutants of the last `mutmut run` (make mutate).

Reads mutmut 3's result files (mutants/**/*.py.meta). Score = killed / (killed + survived +
no tests), where a timeout counts as killed (the mutant hangs the code). Survivors are listed by
module; `mutmut show NAME` prints one's diff.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout",
          None: "not checked", 37: "caught by type check"}


def main(root: str = "mutants", *patterns: str) -> int:
    """Report on ``root``'s results; with ``patterns`` (MUTANTS' globs), only those mutants."""
    metas = sorted(Path(root).rglob("*.py.meta"))
    if not metas:
        print("no mutmut results: run `make mutate` first", file=sys.stderr)
        return 1
    total: Counter[str] = Counter()
    survivors: dict[str, list[str]] = {}
    rows = []
    for meta in metas:
        module = str(meta.relative_to(root))[: -len(".meta")]
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if patterns:
            codes = {k: v for k, v in codes.items()
                     if any(fnmatch.fnmatch(k, p) for p in patterns)}
        c = Counter(STATUS.get(code, "suspicious") for code in codes.values())
        if not codes:
            continue
        total.update(c)
        alive = sorted(k for k, code in codes.items() if STATUS.get(code) in ("survived", "no tests"))
        if alive:
            survivors[module] = alive
        rows.append((module, c))
    print(f"{'module':32} {'mutants':>7} {'killed':>7} {'timeout':>7} {'survived':>8} "
          f"{'no tests':>8} {'score':>6}")
    for module, c in rows + [("TOTAL", total)]:
        caught = c["killed"] + c["timeout"]
        scored = caught + c["survived"] + c["no tests"]
        score = f"{100 * caught / scored:.1f}%" if scored else "-"
        print(f"{module:32} {sum(c.values()):7} {c['killed']:7} {c['timeout']:7} "
              f"{c['survived']:8} {c['no tests']:8} {score:>6}")
    if total["not checked"]:
        print(f"\n{total['not checked']} mutant(s) not checked (run interrupted?)")
    print("\nsurvivors (`mutmut show NAME` for the diff):")
    for module, names in survivors.items():
        print(f"  {module}: {len(names)}")
        for name in names:
            print(f"    {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
