"""pg: Erlang/OTP's process groups with scopes, for asyncio (docs/pg.md).

A `Node` is the local node; scopes run on it, members are spawned on it, and its links
feed it `peer_up` / `peer_down` / `receive`. Groups and scope names are `str` (they
travel in JSON frames). Members are `Member(node, incarnation, local_id)` tuples.

OTP function or answer (first line) -> this API (second line), point by point:

    pg:start(Scope) / pg:start_link(Scope) -> {ok, Pid}
        node.start_scope(scope) -> "ok"
    ... on a running scope -> {error, {already_started, Pid}}
        -> "already_started" (a return value, not an exception)
    stopping the scope server
        node.stop_scope(scope) -> "ok"; connected peers get a scope_down frame
    any call to a scope that is not running: exit noproc
        raises NoScopeError (a LookupError)
    pg:join(Scope, Group, PidOrPids) -> ok
        node.join(scope, group, member_or_list) -> "ok"
    pg:leave(Scope, Group, PidOrPids) -> ok | not_joined
        node.leave(scope, group, member_or_list) -> "ok" | "not_joined"
    a remote pid or a non-pid listed: error({nolocal, Bad})
        raises NotLocalError (.bad), checked before anything changes
    neither a pid nor a list: function_clause
        raises TypeError (also for a group or scope name that is not a str)
    joining a dead pid: accepted, then undone by the noproc monitor
        raises NotLocalError: only live members may join
    pg:get_members(Scope, Group) -> [Pid]
        node.get_members(scope, group) -> tuple[Member, ...] (cached, immutable)
    pg:get_local_members(Scope, Group) -> [Pid]
        node.get_local_members(scope, group) -> tuple[Member, ...]
    pg:which_groups(Scope) / pg:which_local_groups(Scope) -> [Group]
        node.which_groups(scope) / node.which_local_groups(scope) -> list[str]
    pg:monitor_scope(Scope) -> {Ref, #{Group => [Pid]}}
        node.monitor_scope(scope) -> (sub, {group: tuple[Member, ...]})
    pg:monitor(Scope, Group) -> {Ref, [Pid]}
        node.monitor(scope, group) -> (sub, tuple[Member, ...])
    message {Ref, join | leave, Group, [Pid]}
        Event(sub, "join" | "leave", group, members) queued in sub (a Subscription:
        get_nowait(), await get(), drain(); bounded, ends on overflow)
    pg:demonitor(Scope, Ref) -> ok (flushing) | false
        node.demonitor(scope, sub) -> "ok" (flushing) | False
    a subscriber process ends: its monitor is dropped
        demonitor, queue overflow or scope stop end a Subscription
    a process (pid), monitored by its owner's scope server
        node.spawn_member(task=None) -> MemberHandle (.member, .alive, .exit())
    'DOWN' of a member
        handle.exit(), or the task it is tied to finishing
    nodeup / nodedown and monitors on peer scope servers
        node.peer_up(peer) / node.peer_down(peer), from the transport
    messages between scope servers
        node.receive(peer, frame) in, Transport.send(peer, frame) out

Deliberate differences: a local leave notifies and broadcasts only the occurrences
actually removed (OTP echoes the whole list); a sync notifies subscribers of the
difference for changed groups (OTP is silent there); discover carries a protocol
version and a reply flag that saves OTP's second sync per side; `scope_down` replaces
the Erlang monitor on a peer scope; anti-entropy digests (`send_digests`,
`start_anti_entropy`) are off unless started.
"""

from app.pg.member import Member, NodeId, new_incarnation
from app.pg.node import MemberHandle, Node, NoScopeError, NotLocalError
from app.pg.subscription import Event, EventKind, Subscription, SubscriptionEnded, SubscriptionState
from app.pg.transport import Endpoint, Transport
from app.pg.wire import PROTOCOL_VERSION, PgFrame, PgFrameError

__all__ = [
    "PROTOCOL_VERSION",
    "Endpoint",
    "Event",
    "EventKind",
    "Member",
    "MemberHandle",
    "NoScopeError",
    "Node",
    "NodeId",
    "NotLocalError",
    "PgFrame",
    "PgFrameError",
    "Subscription",
    "SubscriptionEnded",
    "SubscriptionState",
    "Transport",
    "new_incarnation",
]
