"""The reliability and security suite (issue 7): kill -9 and resume, concurrency, damaged workspaces,
generated bad inputs, resource limits, security. ``pytest --heavy`` runs the heavy variants."""
