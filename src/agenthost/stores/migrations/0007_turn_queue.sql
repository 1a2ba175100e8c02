-- The work queue of `--role api` and `--role worker` (agenthost.queue.postgres): a turn an
-- api process queued, taken by one worker at a time with SELECT ... FOR UPDATE SKIP LOCKED,
-- held while that worker touches it (taken_until), deleted once the worker acknowledged it
-- after the turn's fenced commit. A row whose taken_until has passed (its worker stopped)
-- is taken again.
CREATE TABLE agenthost_turn_queue (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL,
    session_id text NOT NULL,
    turn_id text NOT NULL,
    job bytea NOT NULL,
    enqueued_at timestamptz NOT NULL DEFAULT now(),
    taken_by text,
    taken_until timestamptz,
    attempts integer NOT NULL DEFAULT 0,
    UNIQUE (session_id, turn_id)
);
CREATE INDEX agenthost_turn_queue_by_tenant ON agenthost_turn_queue (tenant, id);

-- Round-robin across tenants: the tenant served least recently is served next.
CREATE SEQUENCE agenthost_queue_served;
CREATE TABLE agenthost_queue_tenants (
    tenant text PRIMARY KEY,
    served bigint NOT NULL DEFAULT 0
);
