"""Client protocol adapters: the OpenAI Chat Completions API (and, beside it, any other
client protocol) served over the same turn service as the native API. Each adapter only
translates: a request into a turn (session, turn id, message) and a turn's events into its
protocol's stream; leases, fencing, idempotency, limits and drain are the turn layer's."""
