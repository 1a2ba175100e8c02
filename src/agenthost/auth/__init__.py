"""Who is calling: API keys (stored as hashes in the store's backend) and JWTs, each
resolving to a `Principal` with its tenant and limits; sessions are scoped by tenant."""
