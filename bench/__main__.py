"""Run every benchmark and print each figure next to its target.

    .venv/bin/python -m bench              # everything (~8 min); the lab parts need root
    .venv/bin/python -m bench --lab-only --no-engine   # host convergence only
    .venv/bin/python -m bench --no-lab     # evaluation, render, churn, 100 domains, the assembler (no root)

See README.md, "Performance", for what is measured and how.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench import program
from bench.report import as_json, table


def _sizes(text: str) -> list[int | str | None]:
    return [{"example": None, "host": "host"}[p] if p in ("example", "host") else int(p) for p in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-lab", action="store_true", help="skip host convergence in the e2e lab")
    parser.add_argument("--lab-only", action="store_true",
                        help="only the lab's figures: host convergence and the real engine")
    parser.add_argument("--no-engine", action="store_true",
                        help="skip the real `pulumi` CLI's preview and up against the lab")
    parser.add_argument("--sizes", type=_sizes, default=program.SIZES,
                        help="stacks to evaluate: 'host' (the host stack), 'example' (the example domain "
                             "stack) and numbers of mailboxes of a domain stack (default: host,example,10,100,1000,10000)")
    parser.add_argument("--domains", type=int, default=program.DOMAIN_STACKS,
                        help="domain stacks (of 100 mailboxes each) for the many-domains figures (default 100)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="fresh processes per evaluation size (median; default 3)")
    parser.add_argument("--json", type=Path, help="also write the rows and raw numbers to this file")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        if not args.quiet:
            print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    raw: dict = {}
    rows = []
    if not args.lab_only:
        program.warm_up(log)
        raw["evaluation"] = program.measure_evaluation(args.sizes, args.repeat, log)
        raw["growth"] = program.measure_growth(log)
        try:
            raw["render"] = program.measure_render(args.repeat, log)
        except subprocess.CalledProcessError as err:
            log(f"offline render skipped: `python -m components render` failed: {err.stderr.decode()[-300:]}")
        raw["churn"] = program.measure_churn(args.sizes, log)
        raw["whatif"] = program.measure_whatif(args.repeat, log)
        raw["domains"] = program.measure_domains(log, args.domains)
        rows += [*program.evaluation_rows(raw["evaluation"], raw["growth"]), *(program.render_rows(raw["render"]) if "render" in raw else []),
                 *program.churn_rows(raw["churn"]),
                 *program.whatif_rows(raw["whatif"], raw["evaluation"].get("example")),
                 *program.domains_rows(raw["domains"], raw["evaluation"])]
        from bench import tables

        reason = tables.why_not()
        if reason:
            log(f"the table assembler skipped: {reason}")
        else:
            raw["tables"] = tables.measure(log, args.domains)
            rows += tables.rows(raw["tables"])

    if args.no_lab:
        log("host convergence skipped (--no-lab)")
    else:
        from bench import convergence

        reason = convergence.why_no_lab()
        if reason:
            log(f"host convergence skipped: {reason}")
        else:
            raw["lab"] = convergence.measure(log)
            rows += convergence.rows(raw["lab"])

    if args.no_lab or args.no_engine:
        log("the real engine skipped" + (" (--no-lab)" if args.no_lab else " (--no-engine)"))
    else:
        from bench import engine

        reason = engine.why_not()
        if reason:
            log(f"the real engine skipped: {reason}")
        else:
            raw["engine"] = engine.measure(log)
            rows += engine.rows(raw["engine"], raw.get("evaluation"))

    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": as_json(rows), "raw": raw, "cpus": os.cpu_count()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
