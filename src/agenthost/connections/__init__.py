"""Connections to the servers the backends share: today Redis. `redis` turns a Redis URL into
`RedisSettings` and builds every client from it (redis-py's, single server or cluster, and the
pipelining `RedisWire` of `redis_wire`), so the store, the broker, the rate limiter, the API key
store and the LLM cache read one URL the same way and none of them parses it. Import the
submodules: this package imports nothing, so a process that uses no Redis loads no client.
"""
