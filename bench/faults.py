"""`python -m bench --faults`: the fault suite at full size.

The same tests as CI (tests/faults/), with ten times the messages and
waits long enough for a killed server's leases to expire.
"""

from __future__ import annotations

import os
import subprocess
import sys

from bench.procs import ROOT


def main(quick: bool = False) -> int:
    env = {**os.environ, "TRACBOT_FAULTS_SCALE": "1" if quick else "10"}
    command = [sys.executable, "-m", "pytest", "tests/faults", "-v", "--timeout=900"]
    return subprocess.run(command, cwd=ROOT, env=env).returncode
