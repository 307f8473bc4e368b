"""`dps loadtest`: drive a DPS server (or cluster) on loopback and measure it.

Usage, against the embedded server (`DPS_PORT=4010 dps`):

    dps loadtest --url ws://127.0.0.1:4010 --scenario fanout --topics 1 \\
        --subscribers 1000 --publishers 1 --rate 0 --messages 2000 --procs 2 --json out.json

Scenarios (`--scenario`, fanout by default):

- fanout: `--subscribers` sockets, subscriber i joined to topic i % `--topics`, each
  topic's subscribers spread round-robin over the `--url`s; `--publishers` more sockets
  publish to the topics (publisher p to topics p, p+P, ...; or to topic p % T when there
  are fewer topics than publishers). A publisher joins the topics it publishes to, so it
  receives them too: `expected` counts every joined socket, publishers included, and
  equals the servers' socket deliveries when nothing is lost.
- chat: every one of `--subscribers` clients joins room i % `--topics` and publishes to it.
- connect: open `--subscribers` (alias `--connections`) sockets as fast as `--connect-rate`
  allows (0: at most 256 handshakes in flight per process), each joined to topic i %
  `--topics` (spread over the `--url`s as fanout's subscribers are), hold them idle
  (heartbeats only) for `--duration` seconds (5 by default), close them. Reports the rate
  of sockets connected and joined, and failures.
- churn (presence): `--subscribers` sockets join topic i % `--topics` with a presence
  (`{"presence": {"meta": {"status": "online"}}}`, each socket its own key), then for
  `--duration` seconds (5 by default) `--rate` of them a second leave and each joins
  again a second later; nobody publishes. Reports the rejoins' latency to their ok reply
  (`rejoin_latency_ms`) and to their `presence_state` (`presence_state_ms`), and what the
  clients received of presence while churning. Against a topic without presence, the same
  joins and leaves, and no presence events. The nodes' counters and the servers' CPU are
  read when the churn stops, before the clients close.

Recovery (fanout only): with `--reconnect-every S`, each subscriber drops its socket (an
abort, as a network failure does) at a random moment of every S seconds of publishing,
reconnects to the same gateway and rejoins with `{"recover": {"epoch": E, "offset": N}}`,
the position of the last message it received; its first join says `{"recover": null}` so
that every delivery carries its position. A subscriber that has received nothing yet has
no position to name and keeps its socket until the next period. The replay after a rejoin
(the messages up to the offset the join reply names) counts as `recovered`; a rejoin
answered `recovered: false` counts in `recoveries_failed`. The topics need history (a
channels.toml rule with `history_size`): `channels.toml` beside this module has one for
the load test's topics (`DPS_CHANNELS=app/tools/loadtest/channels.toml` on a server you
start yourself). A publisher keeps its socket.

`--local-cluster` starts two topic servers and two gateways for the run (`local`), on free
loopback ports, with the per-socket publish limit lifted and the channel rules of
`--channels` (by default that file: the topics keep history), targets them instead of
`--url`, and stops them at the end. `--kill-owner-after S` (fanout, and only with
`--local-cluster`: the tool kills nothing it did not start) sends SIGKILL, S seconds into
publishing, to the topic server that owns the busiest topic (the most deliveries planned:
subscribers times messages), by its PID; the other takes the topic over. Publishes in
flight to the killed server are answered with an error, by design, so in that phase they
are not failures; what is judged is that nothing acknowledged was lost.

`--messages` is the total published (1,000 by default), or `--duration` seconds of
publishing. `--rate` is the total messages/s, shared evenly by the publishers; 0 means a
closed loop where each publisher keeps `--window` publishes in flight: unacknowledged, or
with `--window-until echo`, unacknowledged or not yet received back by the publisher (for
servers that acknowledge a publish before delivering it, which would otherwise pile up an
unbounded backlog). Every message
is a JSON object `{"m":"<slot>:<seq>:<sent_ns>","p":"xxx..."}` padded to `--payload-bytes`:
the publisher's slot on the topic, its sequence number there, its send time. A closed loop
measures throughput: its latencies include the window's own queueing (window x fan-out
deliveries ahead of each message); measure latency at a `--rate` the server keeps up with.
A DPS socket joins at most 100 topics, so keep topics/publishers at or below that.

`--protocol socketio` speaks Socket.IO (Engine.IO 4) instead of Phoenix V2, to compare DPS
with a python-socketio server (bench/peers/): its URL defaults to the path `/socket.io/`,
and every socket joins one topic. `--server-pid PID` (repeatable) reads the CPU time of the
server's processes (PID and its descendants) before and after each phase and reports it,
with the CPU time per delivery, and their memory before and while the connections are held.

Every step is bounded: connecting and joining by `--phase-timeout` (30 s); publishing by its
budget (duration, or messages/rate) plus `--phase-timeout`, and in any case it stops when no
acknowledgement arrived for `--phase-timeout` (publish_stalled; the unacknowledged ones are
counted as ack_timeout); after the last publish the tool waits at most `--drain` seconds (5)
for outstanding deliveries, and what is missing then is lost: lost counts the
acknowledged publishes a subscriber never got (a publish answered with an error, or not
at all, may or may not have been delivered: it is counted in `unacknowledged` instead).
`--procs N` forks N client processes and merges their results; `--source-addresses
127.0.0.2,127.0.0.3` makes connection c come from the (c % n)th of those loopback
addresses, each of which has its own ephemeral ports (one address to one target has about
28,000: more connections than that are refused before the run, naming the option).
Ctrl-C stops the workers and prints what was measured (exit status 130). Targets must be
loopback (127.0.0.1, localhost, ::1); anything else is refused with status 2.

Exit status: 0 when the failures (lost + duplicated + out-of-order deliveries + connections
that failed to open + connections the server dropped + failed joins + lost worker
processes + failed recoveries + unacknowledged publishes, except in a phase that kills a
topic server, where a kill that never happened counts instead) are at most `--max-loss`,
a count (0 by default); 1 otherwise (and when `--local-cluster` could not start); 2 for
bad arguments; 130 when interrupted.

After the run: a summary table; with each `--url`'s `/cluster` (and any `--node URL`), the
nodes' counter deltas and deliver frames per publish (Δgateway_deliveries_sent/Δpublishes).
`--json FILE` writes the report: `scenario`, `subscribers`, `publishers`, `topics`, `rate`,
`duration`, `connections` (planned, opened, failed, dropped, per_s), `subscriptions`, `messages`
(published), `acked`, `unacknowledged`, `expected` (deliveries of acknowledged messages),
`delivered`, `unique`, `lost`, `duplicates`, `out_of_order`, `reconnect_every`,
`reconnects` (rejoins answered), `recovered` (messages replayed to them),
`recoveries_failed`, `killed` (`node`, `pid`, `topic`, `after_s`, or null), `publish_s`,
`deliveries_per_s`, `latency_ms`, `ack_latency_ms`, `join_latency_ms` (rejoins included),
`connect_latency_ms`, `rejoin_latency_ms`, `presence_state_ms` (each p50, p90, p99, p999,
max, samples), `presence` (leaves, rejoins_sent, presence_states, presence_state_bytes,
presence_diffs, presence_diff_bytes: counts of the clients while churning), `errors` (kind
-> count),
`client_cpu_s` (user+sys of every client process), `client_cpu`,
`server_cpu_s` and `server_cpu_us_per_delivery`, `server_memory` (`rss_before_mb` when the
phase started, `rss_held_mb` once every connection was open and joined, and
`kb_per_connection` between the two; run against a server just started for it) (these
three with `--server-pid`, which counts the processes named and all their descendants,
such as the processes of `dps --workers`), `nodes` (counter
deltas), `deliver_frames_per_publish`, `failures`, `max_loss`, `passed`, `interrupted`;
with `--local-cluster`, `local_cluster` (each node's PID).
`--plot FILE.png` (needs the `plot` extra: `pip install -e '.[plot]'` in the DPS checkout)
draws the latency histogram and the delivery rate over time, under a title
that names the scenario and its parameters.

Scenario files (`--scenario-file FILE.toml`) run phases one after the other. Keys are the
long options without `--` (`payload-bytes` or `payload_bytes`); a phase takes its values
from `[defaults]`, then its own table, then options given on the command line:

    [defaults]
    url = ["ws://127.0.0.1:4000", "ws://127.0.0.1:4001"]
    procs = 2

    [[phase]]
    name = "warm-up"
    scenario = "connect"
    subscribers = 500
    duration = 2

    [[phase]]
    name = "fan-out"
    scenario = "fanout"
    subscribers = 2000
    messages = 5000

The JSON report of a file with several phases sums the counts, merges the latencies and
lists every phase's own report under `phases`.
"""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Load-test a DPS server on loopback: fan-out, chat, connection and presence churn scenarios."
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `loadtest` command to a parser's subcommands."""
    from app.tools.loadtest.options import add_arguments

    parser = subparsers.add_parser("loadtest", help=DESCRIPTION, description=DESCRIPTION)
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Run the load test described by parsed arguments; the exit status."""
    from rich.console import Console

    from app.tools.loadtest.options import OptionError, from_args
    from app.tools.loadtest.runner import execute

    try:
        plan = from_args(args)
    except OptionError as exc:
        print(f"dps loadtest: {exc}", file=sys.stderr)
        return 2
    console = Console()
    if not console.is_terminal:
        console = Console(width=120)  # a log file or a pipe: room for the summary's lines
    return execute(plan, console)
