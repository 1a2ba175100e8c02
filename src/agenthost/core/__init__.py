"""The basics every layer uses and that use nothing of agenthost's: settings, the errors a
client can see, identifiers and input limits. Nothing in here does I/O."""
