"""The load test's options: the command line, scenario files, and their validation.

Every run is a list of phases (`Phase`): one for `--scenario NAME`, one per `[[phase]]` table
of a `--scenario-file`. A phase's value for each option comes from, lowest first: the
built-in default, the file's `[defaults]` table, the phase's table, and an option given
explicitly on the command line (so `--url` or `--procs` retarget a whole file; a `--url`
there also drops the file's `node` list, which named the file's servers).

Targets are loopback only: a URL whose host is not 127.0.0.1, localhost or ::1 is refused,
so that a load tool never hits a remote host by accident. With `--local-cluster` the load
test starts its own servers and targets them instead (their ports are known only once they
run: the runner retargets the phases then). A phase that kills a topic server needs that
cluster: the tool only ever kills a process it started. Every refusal is an `OptionError`
whose message is the one line to print (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import math
import resource
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

SCENARIOS = ("fanout", "chat", "connect", "churn")
PROTOCOLS = ("phoenix", "socketio")
WINDOW_UNTIL = ("ack", "echo")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
DEFAULT_URL = "ws://127.0.0.1:4000/socket/websocket?vsn=2.0.0"
# Each protocol's socket path and the query parameters it needs.
ENDPOINTS = {
    "phoenix": ("/socket/websocket", {"vsn": "2.0.0"}),
    "socketio": ("/socket.io/", {"EIO": "4", "transport": "websocket"}),
}
FDS_PER_PROCESS = 64  # descriptors a worker needs besides its sockets
PORT_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


class OptionError(Exception):
    """A bad option or scenario file; the message is the one line to print."""


@dataclass(frozen=True, slots=True)
class Target:
    """A gateway's WebSocket endpoint, already checked to be on loopback."""

    host: str
    port: int
    path: str  # path and query, e.g. /socket/websocket?vsn=2.0.0

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{self.path}"

    @property
    def cluster_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/cluster"


@dataclass(frozen=True, slots=True)
class Phase:
    """One scenario run with its own options."""

    name: str
    scenario: str
    protocol: str
    targets: tuple[Target, ...]
    nodes: tuple[str, ...]  # /cluster URLs read before and after
    subscribers: int
    topics: int
    publishers: int
    rate: float
    window: int
    window_until: str
    messages: int | None
    duration: float | None
    payload_bytes: int
    procs: int
    max_loss: int
    drain: float
    phase_timeout: float
    connect_rate: float
    heartbeat: float
    source_addresses: tuple[str, ...]  # loopback addresses connections come from, in turn
    reconnect_every: float  # seconds; each subscriber drops and rejoins once per period; 0: never
    kill_owner_after: float | None  # seconds into publishing: SIGKILL the busiest topic's owner

    @property
    def publish_budget_s(self) -> float | None:
        """How long publishing should take; None for a closed loop by count (it stops when
        done, or when acknowledgements stall)."""
        if self.duration is not None:
            return self.duration
        if self.rate:
            return (self.messages or 0) / self.rate
        return None

    @property
    def connections(self) -> int:
        if self.scenario == "fanout":
            return self.subscribers + self.publishers
        return self.subscribers


@dataclass(frozen=True, slots=True)
class Run:
    """What to run and where to write the results."""

    source: str  # the scenario's name, or the scenario file
    phases: tuple[Phase, ...]
    server_pids: tuple[int, ...]  # server processes whose CPU time is measured
    json: Path | None
    plot: Path | None
    progress: bool | None  # None: only when stdout is a terminal
    local_cluster: bool  # start a cluster for the run and target it
    channels: Path  # the channel rules of that cluster


# Option name -> (type, default). Names are the long options without "--", "-" as "_".
PHASE_OPTIONS: dict[str, tuple[type, Any]] = {
    "protocol": (str, "phoenix"),
    "url": (list, [DEFAULT_URL]),
    "node": (list, []),
    "subscribers": (int, 100),
    "topics": (int, 1),
    "publishers": (int, 1),
    "rate": (float, 0.0),
    "window": (int, 16),
    "window_until": (str, "ack"),
    "messages": (int, None),
    "duration": (float, None),
    "payload_bytes": (int, 100),
    "procs": (int, 1),
    "max_loss": (int, 0),
    "drain": (float, 5.0),
    "phase_timeout": (float, 30.0),
    "connect_rate": (float, 0.0),
    "heartbeat": (float, 30.0),
    "source_addresses": (list, []),
    "reconnect_every": (float, 0.0),
    "kill_owner_after": (float, None),
}
DEFAULT_MESSAGES = 1000
DEFAULT_HOLD = 5.0  # seconds of connect (holding) or churn without --duration
# The local cluster's channel rules: the load test's topics keep history, so that
# subscribers that reconnect can recover what they missed.
HISTORY_CHANNELS = Path(__file__).with_name("channels.toml")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The load test's options; every phase option defaults to None ("not given")."""
    add = parser.add_argument
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--scenario", choices=SCENARIOS, help="the scenario to run (fanout)")
    which.add_argument(
        "--scenario-file",
        type=Path,
        metavar="FILE",
        help="a TOML file of phases (pydoc app.tools.loadtest)",
    )
    add(
        "--protocol",
        choices=PROTOCOLS,
        help="phoenix (V2 JSON), or socketio to compare with a python-socketio server [phoenix]",
    )
    add(
        "--url",
        action="append",
        metavar="URL",
        help=f"a gateway WebSocket URL, repeatable ({DEFAULT_URL})",
    )
    add(
        "--node",
        action="append",
        metavar="URL",
        help="another node whose /cluster counters to read",
    )
    add(
        "--subscribers",
        type=int,
        metavar="N",
        help="subscriber connections (connect: connections) [100]",
    )
    add("--connections", type=int, dest="subscribers", metavar="N", help="alias of --subscribers")
    add("--topics", type=int, metavar="N", help="topics (chat: rooms) [1]")
    add("--publishers", type=int, metavar="N", help="publisher connections (fanout) [1]")
    add(
        "--rate",
        type=float,
        metavar="MSG_S",
        help="total messages/s; 0 = as fast as --window allows (churn: leaves/s) [0]",
    )
    add("--window", type=int, metavar="N", help="publishes in flight per publisher [16]")
    add(
        "--window-until",
        choices=WINDOW_UNTIL,
        help="a publish is in flight until acknowledged, or acknowledged and received back "
        "by its publisher (echo) [ack]",
    )
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument(
        "--messages", type=int, metavar="N", help=f"messages in all [{DEFAULT_MESSAGES}]"
    )
    amount.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help="seconds to publish (connect: to hold; churn: to churn) instead",
    )
    add("--payload-bytes", type=int, metavar="N", help="size of each published JSON object [100]")
    add("--procs", type=int, metavar="N", help="client processes [1]")
    add("--max-loss", type=int, metavar="N", help="failures tolerated, a count (see the docs) [0]")
    add(
        "--drain",
        type=float,
        metavar="S",
        help="seconds to wait for deliveries after publishing [5]",
    )
    add(
        "--phase-timeout",
        type=float,
        metavar="S",
        help="seconds connecting and joining may take [30]",
    )
    add("--connect-rate", type=float, metavar="CONN_S", help="new connections/s, 0 = unlimited [0]")
    add("--heartbeat", type=float, metavar="S", help="seconds between heartbeats per socket [30]")
    add(
        "--source-addresses",
        type=lambda text: [part.strip() for part in text.split(",") if part.strip()],
        metavar="ADDR,...",
        help="loopback addresses to connect from, in turn (127.0.0.2,127.0.0.3,...): each "
        "has its own ephemeral ports, about 28,000 per target [the system's choice]",
    )
    add(
        "--reconnect-every",
        type=float,
        metavar="S",
        help="fanout: each subscriber drops its socket at a random moment of every S seconds "
        "of publishing, reconnects and rejoins recovering from the last position it saw "
        "(the topics need history) [0: never]",
    )
    add(
        "--kill-owner-after",
        type=float,
        metavar="S",
        help="fanout: S seconds into publishing, SIGKILL the topic server that owns the "
        "busiest topic (needs --local-cluster)",
    )
    add(
        "--local-cluster",
        action="store_true",
        help="start 2 topic servers and 2 gateways on free loopback ports for the run, with "
        "the publish limit lifted, and target them (instead of --url); stopped at the end",
    )
    add(
        "--channels",
        type=Path,
        metavar="FILE",
        help="the channels.toml of --local-cluster [one where the load test's topics keep history]",
    )
    add(
        "--server-pid",
        type=int,
        action="append",
        metavar="PID",
        help="a server process whose CPU time (per delivery) and memory (per connection) to "
        "report, with its descendants; repeatable (Linux)",
    )
    add("--json", type=Path, metavar="FILE", help="write the report as JSON to this file")
    add(
        "--plot",
        type=Path,
        metavar="FILE.png",
        help="write a PNG: latency histogram and delivery rate",
    )
    add("--progress", action="store_true", default=None, help="live progress even if not a tty")


def from_args(args: argparse.Namespace) -> Run:
    """Validate the parsed command line (and scenario file) into a `Run`."""
    given = {name: getattr(args, name) for name in PHASE_OPTIONS if getattr(args, name) is not None}
    if args.scenario_file is not None:
        source = str(args.scenario_file)
        tables = _read_file(args.scenario_file)
    else:
        source = args.scenario or "fanout"
        tables = [{"scenario": source}]
    phases = tuple(_phase(i, table, given) for i, table in enumerate(tables))
    if args.plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise OptionError(
            "--plot needs matplotlib, DPS's `plot` extra: pip install -e '.[plot]' in the DPS "
            "checkout (.venv/bin/pip after `make run`)"
        )
    pids = tuple(args.server_pid or ())
    for pid in pids:
        if not Path(f"/proc/{pid}/stat").exists():
            raise OptionError(f"--server-pid {pid}: no such process (or no /proc here)")
    _check_cluster(args, phases)
    channels = args.channels or HISTORY_CHANNELS
    return Run(
        source, phases, pids, args.json, args.plot, args.progress, args.local_cluster, channels
    )


def _check_cluster(args: argparse.Namespace, phases: tuple[Phase, ...]) -> None:
    """What needs --local-cluster has it, and what it replaces is not given with it."""
    if args.local_cluster:
        for option in ("url", "node"):
            if getattr(args, option) is not None:
                raise OptionError(f"--local-cluster starts its own servers: drop --{option}")
        if args.channels is not None and not args.channels.is_file():
            raise OptionError(f"--channels {args.channels}: no such file")
    elif args.channels is not None:
        raise OptionError(
            "--channels is for --local-cluster (a server you start reads DPS_CHANNELS)"
        )
    killers = [p for p in phases if p.kill_owner_after is not None]
    if killers and not args.local_cluster:
        raise OptionError(
            f"{killers[0].name}: --kill-owner-after kills a topic server by its PID, so only "
            "one the load test started: add --local-cluster"
        )
    if len(killers) > 1:  # the local cluster has two topic servers: a second kill is an outage
        raise OptionError(f"{killers[1].name}: only one phase may kill a topic server")


def _read_file(path: Path) -> list[dict[str, Any]]:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise OptionError(f"--scenario-file: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise OptionError(f"--scenario-file: {path} is not valid TOML: {exc}") from None
    unknown = set(data) - {"defaults", "phase"}
    if unknown:
        raise OptionError(f"{path}: unknown table {sorted(unknown)[0]!r} (accepts defaults, phase)")
    defaults = data.get("defaults", {})
    phases = data.get("phase", [])
    if not isinstance(defaults, dict) or not isinstance(phases, list) or not phases:
        raise OptionError(f"{path}: expected a [defaults] table and one or more [[phase]] tables")
    tables = []
    for phase in phases:
        if not isinstance(phase, dict):
            raise OptionError(f"{path}: every [[phase]] must be a table")
        merged = _keys(defaults)
        own = _keys(phase)
        if {"messages", "duration"} & own.keys():  # the phase's amount replaces the default's
            merged.pop("messages", None)
            merged.pop("duration", None)
        tables.append({**merged, **own})
    return tables


ALIASES = {"connections": "subscribers"}


def _keys(table: dict[str, Any]) -> dict[str, Any]:
    keys = (key.replace("-", "_") for key in table)
    return {ALIASES.get(key, key): value for key, value in zip(keys, table.values(), strict=True)}


def _phase(index: int, table: dict[str, Any], given: dict[str, Any]) -> Phase:
    table = _keys(table)
    where = f"phase {index + 1}"
    name = str(table.pop("name", "")) or f"{where}"
    scenario = table.pop("scenario", "fanout")
    if scenario not in SCENARIOS:
        raise OptionError(f"{where}: scenario {scenario!r} (accepts {', '.join(SCENARIOS)})")
    values: dict[str, Any] = {key: default for key, (_, default) in PHASE_OPTIONS.items()}
    for key, value in table.items():
        if key not in PHASE_OPTIONS:
            raise OptionError(f"{where}: unknown option {key!r}")
        values[key] = _typed(where, key, value)
    if "messages" in table and "duration" in table:
        raise OptionError(f"{where}: give messages or duration, not both")
    values.update(given)
    if "url" in given:  # the command line names other servers: the file's nodes are not theirs
        values["node"] = given.get("node", [])
    if "messages" in given:
        values["duration"] = None
    if "duration" in given:
        values["messages"] = None
    return validate(_build(name, scenario, values))


def _typed(where: str, key: str, value: Any) -> Any:
    kind = PHASE_OPTIONS[key][0]
    if kind is list:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    elif kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    elif kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    elif kind is str and isinstance(value, str):
        return value
    raise OptionError(f"{where}: {key} = {value!r} is not {_KIND_NAMES[kind]}")


_KIND_NAMES = {
    list: "a string or list of strings",
    int: "an integer",
    float: "a number",
    str: "a string",
}


def _build(name: str, scenario: str, v: dict[str, Any]) -> Phase:
    protocol = v["protocol"]
    if protocol not in PROTOCOLS:
        raise OptionError(f"{name}: --protocol {protocol} (accepts {', '.join(PROTOCOLS)})")
    urls = v["url"]
    if protocol != "phoenix" and urls == PHASE_OPTIONS["url"][1]:
        raise OptionError(f"{name}: --protocol {protocol} needs a --url")
    targets = tuple(parse_target(url, "--url", protocol) for url in urls)
    nodes = [t.cluster_url for t in targets]
    nodes += [parse_target(url, "--node").cluster_url for url in v["node"]]
    messages, duration = v["messages"], v["duration"]
    if messages is None and duration is None:
        if scenario in ("connect", "churn"):
            duration = DEFAULT_HOLD
        else:
            messages = DEFAULT_MESSAGES
    return Phase(
        name=name,
        scenario=scenario,
        protocol=protocol,
        targets=targets,
        nodes=tuple(dict.fromkeys(nodes)),
        subscribers=v["subscribers"],
        topics=v["topics"],
        publishers=v["publishers"],
        rate=v["rate"],
        window=v["window"],
        window_until=v["window_until"],
        messages=messages,
        duration=duration,
        payload_bytes=v["payload_bytes"],
        procs=v["procs"],
        max_loss=v["max_loss"],
        drain=v["drain"],
        phase_timeout=v["phase_timeout"],
        connect_rate=v["connect_rate"],
        heartbeat=v["heartbeat"],
        source_addresses=tuple(_source(name, text, targets) for text in v["source_addresses"]),
        reconnect_every=v["reconnect_every"],
        kill_owner_after=v["kill_owner_after"],
    )


def _source(name: str, text: str, targets: tuple[Target, ...]) -> str:
    """A loopback address of the targets' family to connect from."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        address = None
    if address is None or not address.is_loopback:
        raise OptionError(
            f"{name}: --source-addresses {text}: not a loopback address (127.0.0.0/8 or ::1)"
        )
    for target in targets:
        family = 6 if ":" in target.host else 4
        if family != address.version:
            raise OptionError(
                f"{name}: --source-addresses {text}: not of the family of the target "
                f"{target.host} (IPv{family})"
            )
    return text


def parse_target(text: str, option: str, protocol: str = "phoenix") -> Target:
    """A ws:// or http:// URL on loopback; the protocol's socket path and query (vsn=2.0.0
    for Phoenix) are filled in when absent."""
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "http"):
        raise OptionError(f"{option} {text}: expected a ws:// (or http://) URL")
    host = parts.hostname
    if host not in LOOPBACK:
        raise OptionError(
            f"{option} {text}: not a loopback host (accepts {', '.join(LOOPBACK)}); "
            "a load test never targets a remote host"
        )
    try:
        port = parts.port or 80
    except ValueError:
        raise OptionError(f"{option} {text}: bad port") from None
    socket_path, needed = ENDPOINTS[protocol]
    path = parts.path if parts.path not in ("", "/") else socket_path
    query = parse_qsl(parts.query)
    given = dict(query)
    vsn = given.get("vsn")
    if protocol == "phoenix" and vsn is not None and not vsn.startswith("2.0."):
        raise OptionError(f"{option} {text}: vsn={vsn} (the load test speaks vsn=2.0.0)")
    query += [(key, value) for key, value in needed.items() if key not in given]
    return Target(host, port, f"{path}?{urlencode(query)}")


def validate(phase: Phase) -> Phase:
    """Refuse values that make no sense; return the phase unchanged."""
    where = f"{phase.name} ({phase.scenario})"
    fanout, churn = phase.scenario == "fanout", phase.scenario == "churn"
    least_subscribers = 0 if fanout else 1
    one_topic_each = phase.protocol != "socketio" or not fanout or phase.topics <= phase.publishers
    # Recovery and positions are Phoenix joins; fan-out's subscribers are the sockets that
    # only receive, so dropping them loses no publish of the test's own.
    plain_fanout = fanout and phase.protocol == "phoenix"
    checks = [
        (phase.window_until in WINDOW_UNTIL, "window-until", " or ".join(WINDOW_UNTIL)),
        (one_topic_each, "topics", "<= --publishers with socketio: one topic per socket"),
        (phase.subscribers >= least_subscribers, "subscribers", f">= {least_subscribers}"),
        (phase.topics >= 1, "topics", ">= 1"),
        (phase.publishers >= 1 or not fanout, "publishers", ">= 1"),
        (phase.rate >= 0 and math.isfinite(phase.rate), "rate", ">= 0"),
        (phase.rate > 0 or not churn, "rate", "> 0 with churn: leaves per second"),
        (phase.duration is not None or not churn, "messages", "none with churn"),
        (phase.protocol == "phoenix" or not churn, "protocol", "phoenix with churn"),
        (phase.window >= 1, "window", ">= 1"),
        (phase.messages is None or phase.messages >= 0, "messages", ">= 0"),
        (phase.duration is None or 0 < phase.duration <= 86400, "duration", "0 < s <= 86400"),
        (0 <= phase.payload_bytes <= 1 << 20, "payload-bytes", "0 to 1048576"),
        (1 <= phase.procs <= 64, "procs", "1 to 64"),
        (phase.max_loss >= 0, "max-loss", ">= 0"),
        (0 <= phase.drain <= 3600, "drain", "0 to 3600"),
        (0 < phase.phase_timeout <= 3600, "phase-timeout", "0 < s <= 3600"),
        (phase.connect_rate >= 0, "connect-rate", ">= 0"),
        (phase.heartbeat >= 1, "heartbeat", ">= 1"),
        (0 <= phase.reconnect_every <= 86400, "reconnect-every", "0 to 86400"),
        (phase.kill_owner_after is None or phase.kill_owner_after >= 0, "kill-owner-after", ">= 0"),
    ]
    for ok, option, accepts in checks:
        if not ok:
            value = getattr(phase, option.replace("-", "_"))
            raise OptionError(f"{where}: --{option} {value} (accepts {accepts})")
    for option, asked in (
        ("reconnect-every", phase.reconnect_every > 0),
        ("kill-owner-after", phase.kill_owner_after is not None),
    ):
        if asked and not plain_fanout:
            raise OptionError(f"{where}: --{option} is for the fanout scenario over phoenix")
    per_proc = math.ceil(phase.connections / phase.procs)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and per_proc + FDS_PER_PROCESS > hard:
        raise OptionError(
            f"{where}: {per_proc} connections per process exceed the open-file limit {hard}; "
            "raise --procs or `ulimit -Hn`"
        )
    ports = ephemeral_ports()
    sources = max(1, len(phase.source_addresses))
    per_source = math.ceil(phase.connections / len(phase.targets) / sources)
    if ports is not None and per_source > ports:
        raise OptionError(
            f"{where}: {per_source:,} connections from one address to one target exceed its "
            f"{ports:,} ephemeral ports ({PORT_RANGE}): connect from more loopback addresses "
            f"(--source-addresses 127.0.0.2,127.0.0.3,...)"
        )
    return phase


def ephemeral_ports() -> int | None:
    """How many local ports the system gives out to connections to one destination."""
    try:
        low, high = (int(n) for n in PORT_RANGE.read_text().split())
    except (OSError, ValueError):
        return None
    return high - low + 1
