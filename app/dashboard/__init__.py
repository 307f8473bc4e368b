"""`/dashboard`, on every node: the whole cluster at a glance, live.

The page (`dashboard.html` and `static/`) shows every node (role, incarnation, readiness,
links, sockets, topics, rates, errors, latency), the ring and its handovers, and charts
of the last minutes. The node pushes it a frame every second as server-sent events.

    routes      the page, its login, the event stream, the node's snapshot, static files
    access      who may see it: DPS_API_KEY (bearer or a session cookie), peers
    collector   while anyone watches: polls the other nodes, feeds the viewers (I/O)
    view        the cluster from snapshots: status, rates, percentiles, ring, history (pure)
    snapshot    what one node tells about itself
"""

from app.dashboard.collector import Dashboard
from app.dashboard.routes import ROUTES

__all__ = ["ROUTES", "Dashboard"]
