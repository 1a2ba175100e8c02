-- agenthost schema 2: API keys for --auth keys (agenthost keys create|list|revoke), kept
-- beside the sessions. `record` is the key's msgpack record (never the key itself).
CREATE TABLE agenthost_api_keys (
    key_hash text PRIMARY KEY,
    key_id text NOT NULL UNIQUE,
    tenant text NOT NULL,
    created_at double precision NOT NULL,
    record bytea NOT NULL
);
CREATE INDEX agenthost_api_keys_tenant ON agenthost_api_keys (tenant, created_at);
