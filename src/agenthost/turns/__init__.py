"""The turn layer: the engine that knows the order of a turn, the shapes of the user's
agent, the chunks of a streamed turn on their way to the broker, drain, and the turn service
that web handlers, the WebSocket loop and queue workers call. No web framework in here."""
