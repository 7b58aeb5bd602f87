"""Local runtime: a run as a child process (the embedded default)."""
