"""What the servers say about themselves before and after a phase: the nodes' own counters,
read from `GET /cluster`, and the CPU time of the server processes named by `--server-pid`.

A node that does not answer (or answers something else) is left out and named in the
returned problems; the load test goes on without its numbers.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterable
from urllib.parse import urlsplit

TIMEOUT_S = 2.0
# No proxy, whatever the environment says: the nodes are on loopback.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def read(urls: Iterable[str]) -> tuple[dict[str, dict[str, int]], list[str]]:
    """{node: counters} for every node that answered (under the name it gives itself, so
    two URLs of one node count once), and a line per node that did not."""
    counters: dict[str, dict[str, int]] = {}
    problems: list[str] = []
    key = os.environ.get("DPS_API_KEY")  # /cluster needs the node's API key when it has one
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    for url in urls:
        try:
            request = urllib.request.Request(url, headers=headers)
            with _opener.open(request, timeout=TIMEOUT_S) as response:
                body = json.loads(response.read())
            values = body["counters"]
            counters[str(body.get("node") or urlsplit(url).netloc)] = {
                k: v for k, v in values.items() if isinstance(v, int)
            }
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(f"{url}: {exc}")
    return counters, problems


def cpu_seconds(pids: Iterable[int]) -> float | None:
    """The user and system CPU seconds the processes have used so far (their threads
    included); None if one of them is gone, so that no partial sum passes for a whole."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")
