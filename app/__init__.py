"""agent-sessions: durable computer-use agent sessions over REST and SSE."""
