"""`python -m drill` (what `make drill` runs): the drill's scenarios in a local VM.

Builds (once) and boots a Debian VM under qemu, reproduces the incident in it,
prints each scenario's timeline and a summary table, and writes
drill-results/summary.json with each scenario's evidence beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from drill import timeline
from drill.degrade import run_degrade
from drill.guarded import run_guarded
from drill.image import ImageBuildError, Recipe, ensure_image
from drill.qemu import VmError, choose_accelerator
from drill.recovery import run_recovery
from drill.scenarios import Outcome, ScenarioFailed, UnguardedPlan, run_unguarded, write_results
from healthcheck.status import Status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m drill", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("drill-results"), help="default: drill-results/")
    parser.add_argument(
        "--freeze-goal",
        type=float,
        default=UnguardedPlan.freeze_goal_s,
        metavar="SECONDS",
        help="stop scenario 1 once sshd has been silent this long and the probe said HUNG (default %(default)s)",
    )
    parser.add_argument(
        "--watch",
        type=float,
        default=UnguardedPlan.watch_s,
        metavar="SECONDS",
        help="watch scenario 1 at most this long after the workers start (default %(default)s)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=timeline.SCENARIOS,
        default=list(timeline.SCENARIOS),
        metavar="SCENARIO",
        help="run only these scenarios: unguarded, guarded, recovery, degrade (default: all four)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        image = ensure_image(Recipe())
        accelerator = choose_accelerator(image)
        outcomes: dict[str, Outcome] = {}
        failures: list[str] = []
        plan = UnguardedPlan(freeze_goal_s=args.freeze_goal, watch_s=args.watch)
        scenarios: dict[str, Callable[[], Outcome]] = {
            "unguarded": lambda: run_unguarded(image, accelerator, plan),
            "guarded": lambda: run_guarded(image, accelerator),
            "recovery": lambda: run_recovery(image, accelerator),
            "degrade": lambda: run_degrade(image, accelerator),
        }
        for number, (name, run) in enumerate(scenarios.items(), start=1):
            if name not in args.only:
                continue
            print(f"drill: scenario {number}, {name}, with {accelerator.description}", flush=True)
            started = time.monotonic()
            try:
                outcomes[name] = run()
            except ScenarioFailed as failed:  # the other scenarios still run, and what they found is written
                failures.append(f"scenario {number}, {name}: {failed}")
                print(f"drill: error: {failures[-1]}", file=sys.stderr, flush=True)
                continue
            print(f"drill: scenario {number}, {name}, took {time.monotonic() - started:.0f}s", flush=True)
    except (ImageBuildError, VmError) as error:
        print(f"drill: error: {error}", file=sys.stderr)
        return Status.UNKNOWN
    except KeyboardInterrupt:
        print("drill: interrupted; the VM is stopped", file=sys.stderr)
        return Status.UNKNOWN
    path = write_results(args.results, outcomes)
    for name, outcome in outcomes.items():
        print(f"\n{name}:\n{timeline.render_timeline(outcome.events)}")
    print("\n" + timeline.render_table([outcome.summary for outcome in outcomes.values()]))
    print(f"\nwrote {path}")
    for failure in failures:
        print(f"drill: failed: {failure}", file=sys.stderr)
    return Status.CRITICAL if failures else Status.OK


if __name__ == "__main__":
    sys.exit(main())
