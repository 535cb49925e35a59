#!/usr/bin/env python3
"""Every fault-injection test, the slow repetitions included, and their counts as JSON.

Runs the fault suite with pytest (kill -9 of builder and runner workers ×10, SIGTERM of tune ×5
with resume to the exact budget, a worker slow to start, the database read-only and the disk full
mid-job, a PostgreSQL restart mid-job, two identical tunes at once, a failed validation over a good
artifact, tampered artifacts refused by hash and by signature, a runaway-memory candidate,
out-of-range ids into every embedding input), each test adding a line of counts; then prints the
totals: faults injected, jobs completed, records lost (must be 0), artifacts left broken (must be 0),
and the tests that failed or were skipped, with why.

    python scripts/chaos.py [--quick] [--bert tuning_logs/models/bert.onnx]

``--quick`` leaves out the slow repetitions; ``--bert`` adds a real BERT export with
``token_type_ids`` (``scripts/export_models.py bert``) to the out-of-range-id probes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = ["tests/test_faults.py", "tests/test_postgres.py", "tests/test_resume_and_concurrency.py",
         "tests/test_measure_isolation.py", "tests/test_input_safety.py", "tests/test_runtime.py"]


def run_suite(quick: bool, report: Path, junit: Path, bert: str | None) -> int:
    marks = "not slow" if quick else "slow or not slow"
    env = {**os.environ, "AUTOTUNE_CHAOS_REPORT": str(report),
           **({"AUTOTUNE_REAL_BERT": str(Path(bert).resolve())} if bert else {})}
    command = [sys.executable, "-m", "pytest", "-q", "-m", marks, f"--junitxml={junit}", *SUITE]
    return subprocess.run(command, cwd=ROOT, env=env, stdout=sys.stderr).returncode  # stdout: the JSON


def totals(report: Path) -> dict:
    counts = {"faults_injected": 0, "jobs_completed": 0, "records_lost": 0, "artifacts_broken": 0}
    kinds: dict[str, int] = {}
    for line in report.read_text().splitlines() if report.exists() else []:
        entry = json.loads(line)
        kinds[entry["fault"]] = kinds.get(entry["fault"], 0) + entry["injected"]
        counts["faults_injected"] += entry["injected"]
        counts["jobs_completed"] += entry["completed"]
        counts["records_lost"] += entry["records_lost"]
        counts["artifacts_broken"] += entry["artifacts_broken"]
    return {**counts, "by_fault": kinds}


def outcomes(junit: Path) -> dict:
    """The failed and skipped tests of the run, with their messages."""
    found: dict = {"failed": {}, "skipped": {}}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        for tag, key in (("failure", "failed"), ("error", "failed"), ("skipped", "skipped")):
            element = case.find(tag)
            if element is not None:
                found[key][name] = (element.get("message") or "")[:300]
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="leave out the slow repetitions")
    parser.add_argument("--bert", help="a real BERT export with token_type_ids to probe as well")
    args = parser.parse_args()
    if args.bert and not Path(args.bert).is_file():
        parser.error(f"--bert {args.bert}: no such file (scripts/export_models.py bert writes one)")
    with tempfile.TemporaryDirectory(prefix="autotune-chaos-") as folder:
        report, junit = Path(folder) / "counts.jsonl", Path(folder) / "junit.xml"
        code = run_suite(args.quick, report, junit, args.bert)
        result = {**totals(report), **outcomes(junit), "pytest_exit_code": code}
    print(json.dumps(result, indent=2))
    return 0 if code == 0 and result["records_lost"] == 0 and result["artifacts_broken"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
