"""``s3kit bench`` runs its scenarios side by side and reports ratios (numbers are not asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.scale
@pytest.mark.timeout(240)
def test_bench_reports_every_variant_and_ratios() -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "s3kit", "bench",
            "--scenario", "small", "--scenario", "large", "--scenario", "failover",
            "--scenario", "async",
            "--size-mb", "9", "--ops", "8", "--reps", "1", "--json",
        ],
        capture_output=True,
        text=True,
        timeout=230,
        env={**os.environ, "AWS_EC2_METADATA_DISABLED": "true"},
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    variants = {(r["scenario"], r["variant"]) for r in report["rows"]}
    for scenario in ("small head", "small get"):
        for variant in ("boto3 shared client", "s3kit (boto3)", "obstore raw", "s3kit (obstore)"):
            assert (scenario, variant) in variants
    assert ("large up 9 MiB", "s3kit (boto3)") in variants
    assert ("large down 9 MiB", "boto3 s3transfer") in variants
    failover = next(r for r in report["rows"] if r["scenario"].startswith("failover"))
    assert failover["extra"]["user_errors"] == 0
    assert failover["extra"]["failed_attempts_on_dead"] >= 1
    for row in report["rows"]:
        assert row["ops_per_s"] > 0
    ratios = {(r["scenario"], r["variant"]) for r in report["ratios"]}
    assert ("small head", "s3kit (obstore) / obstore raw") in ratios
    assert ("small get", "s3kit (obstore) / obstore raw + metadata") in ratios
    assert ("small get", "s3kit (boto3) / boto3 shared client") in ratios
    for variant in ("s3kit async (obstore)", "obstore raw async", "s3kit (obstore)"):
        assert ("async small get", variant) in variants
    assert ("async small get", "s3kit async (obstore) / s3kit (obstore)") in ratios
    # the test extra installs uvloop: the asyncio rows run again on it
    modes = {r["variant"]: r["extra"]["mode"] for r in report["rows"] if "async" in r["variant"]}
    assert modes["s3kit async (obstore) on uvloop"] == "uvloop"
    assert modes["obstore raw async on uvloop"] == "uvloop"
    assert modes["s3kit async (obstore)"] == "asyncio"
    assert (
        "async small get",
        "s3kit async (obstore) on uvloop / obstore raw async on uvloop",
    ) in ratios
    assert ("large down 9 MiB", "s3kit (obstore)") in variants
    assert ("large up 9 MiB", "s3kit (obstore) / obstore raw") in ratios
    # downloads also against raw obstore and s3transfer made as durable as s3kit's (fsync)
    assert ("large down 9 MiB", "obstore raw + fsync") in variants
    assert ("large up 9 MiB", "obstore raw + fsync") not in variants
    assert ("large down 9 MiB", "s3kit (obstore) / obstore raw + fsync") in ratios
    assert ("large down 9 MiB", "s3kit (boto3) / boto3 s3transfer + fsync") in ratios
    # and s3kit with fsync=False against the bare raw rows (the same work again)
    assert ("large down 9 MiB", "s3kit (obstore), fsync=False / obstore raw") in ratios
    assert ("large down 9 MiB", "s3kit (boto3), fsync=False / boto3 s3transfer") in ratios
    assert ("large up 9 MiB", "s3kit (obstore), fsync=False") not in variants
