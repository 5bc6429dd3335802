"""The durable local store (Redis): state, outbox, command ids, audit log. The only place redis
is imported.
"""
