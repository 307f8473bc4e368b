"""What the servers say about themselves before and after a phase: the nodes' own counters,
read from `GET /cluster`, and the CPU time and memory of the server processes named by
`--server-pid` with their descendants (a supervisor's workers, a cluster's nodes).

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
    """The user and system CPU seconds the processes and their descendants have used so far
    (their threads included); None if one of the named processes is gone, so that no
    partial sum passes for a whole."""
    stats = _stats()
    total = 0
    for pid in _with_descendants(pids, stats):
        if pid not in stats:
            return None
        fields = stats[pid]
        total += int(fields[11]) + int(fields[12])  # utime and stime, fields 14 and 15
    return total / os.sysconf("SC_CLK_TCK")


def rss_bytes(pids: Iterable[int]) -> int | None:
    """The resident memory of the processes and their descendants; None as above."""
    stats = _stats()
    total = 0
    for pid in _with_descendants(pids, stats):
        if pid not in stats:
            return None
        total += int(stats[pid][21]) * PAGE  # rss, field 24
    return total


PAGE = os.sysconf("SC_PAGE_SIZE")


def _stats() -> dict[int, list[str]]:
    """The fields after the command name of /proc/PID/stat, for every process."""
    stats = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as stat:
                    stats[int(entry.name)] = stat.read().rpartition(")")[2].split()
            except OSError:
                continue  # gone meanwhile
    return stats


def _with_descendants(pids: Iterable[int], stats: dict[int, list[str]]) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)  # ppid, field 4
    found = list(dict.fromkeys(pids))
    for pid in found:  # grows while it is walked: breadth first
        found.extend(child for child in children.get(pid, ()) if child not in found)
    return found
