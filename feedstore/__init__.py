"""feedstore: a point-in-time-correct feature pipeline for feed ranking (config, CLI, shared I/O)."""

__version__ = "0.1.0"
