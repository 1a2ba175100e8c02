"""`agenthost cluster`: a real local fleet — N `agenthost serve` processes, a redis-server and
HAProxy in front — with scale, rolling replacement and drain, for laptops and tests."""
