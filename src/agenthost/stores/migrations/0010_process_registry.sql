-- agenthost schema 10: the process registry (`--registry`, or the store's database by
-- default): each process's heartbeat record and the autoscaler's recent decisions, both
-- msgpack records. Earlier builds created these two tables themselves on first open, hence
-- IF NOT EXISTS: a database that has them already takes this version as it is.
CREATE TABLE IF NOT EXISTS agenthost_processes (
    process_id text PRIMARY KEY,
    expires_at double precision NOT NULL,
    record bytea NOT NULL
);
CREATE TABLE IF NOT EXISTS agenthost_autoscale (
    id bigserial PRIMARY KEY,
    record bytea NOT NULL
);
