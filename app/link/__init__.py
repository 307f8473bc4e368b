"""Node links: how gateways and topic servers talk, in memory or over the network.

    interface   the calls between a gateway and a topic server (OwnerLink, GatewayLink)
    memory      both ends in one process (the embedded default)
    codec       the frames of a network link, as bytes
    handshake   the opening of a network link: both ends prove the cluster secret
    connection  one open network link: batching, a bound, frame dispatch
    hub         a node's links by peer, and pg running over them
    listener    the end that is dialled (`/_dps/link` on topic servers)
    dialer      the end that dials (gateways), keep-alive and redial

See docs/architecture.md for the frames and the rules of failover and handover.
"""
