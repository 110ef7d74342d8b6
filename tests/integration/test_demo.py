"""The README's main command: ``s3kit demo`` runs end to end on servers it starts itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


@pytest.mark.timeout(180)
def test_demo_runs_fails_over_and_recovers() -> None:
    env = {**os.environ, "AWS_EC2_METADATA_DISABLED": "true", "COLUMNS": "140"}
    proc = subprocess.run(
        [sys.executable, "-m", "s3kit", "demo"],
        capture_output=True,
        text=True,
        timeout=170,
        env=env,
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    # the killed store's breaker opened, users saw no failure, and one probe closed it again
    assert "breaker store-b: closed → open" in out
    assert re.search(r"\b0 failed user requests of 240\b", out)
    assert "breaker store-b: half_open → closed" in out
    assert "probes sent: 1; breaker is closed" in out
    assert "servers stopped." in out
    pids = [int(p) for p in re.findall(r"pid (\d+)\)", out)]
    assert len(pids) == 4
    for pid in pids:  # every server the demo started is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
