"""Chaos runs: killed workers, restarted Redis, every gateway fault; the invariant checker."""
