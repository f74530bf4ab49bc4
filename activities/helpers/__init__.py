"""What several activity modules share: findings bookkeeping, HTTP probes and load, files,
processes, secrets, running blocking calls off the event loop."""
