"""Where a finished run's time went: wall time and peak memory per stage, representation or job.

    python bench/run_costs.py results/                       # per stage, then per representation
    python bench/run_costs.py results/ --by job              # every benchmarked job
    python bench/run_costs.py results/ --by stage --by job   # any of stage, representation, job

Reads the Snakemake benchmark files under ``<results>/benchmarks/`` (preimage.run_costs) and prints
one Markdown table per grouping, sorted by wall time, with a total row. Wall seconds are summed over
jobs (job-seconds): a run on several cores takes less wall-clock time than their sum.
"""
from __future__ import annotations

import argparse
import sys

from preimage.run_costs import GROUPINGS, costs_markdown, read_costs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", help="a results folder (the one holding benchmarks/)")
    parser.add_argument("--by", action="append", choices=GROUPINGS,
                        help="grouping (repeatable; default: stage, then representation)")
    args = parser.parse_args(argv)
    try:
        costs = read_costs(args.results)
    except (FileNotFoundError, ValueError) as err:
        print(f"run_costs: {err}", file=sys.stderr)
        return 1
    for k, by in enumerate(args.by or ["stage", "representation"]):
        print(("\n" if k else "") + f"{len(costs)} benchmarked jobs of {args.results}, by {by}:\n")
        print(costs_markdown(costs, by), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
