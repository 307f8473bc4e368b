"""Debian's Chromium as the browser tests (and bench/dashboard_cost.py) launch it."""

from __future__ import annotations

from pathlib import Path

PATH = Path("/usr/bin/chromium")
# Chromium's calls home (updates, sync, field trials) would be refused, many at a time,
# by this machine's closed network: none of them is made.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MISSING = (
    f"no Chromium at {PATH}: install Debian's chromium package "
    "(apt-get install chromium; `make test` does it as root)"
)
