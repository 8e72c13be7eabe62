"""The processes (server, worker, CLI), metrics, doctor and setup."""
