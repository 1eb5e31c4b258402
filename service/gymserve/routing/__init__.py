"""Who owns an env and how a request reaches it: ids, the replica table, forwarding, the peer socket server."""
