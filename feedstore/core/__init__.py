"""Shared building blocks of feedstore's engines (the Spark session; the rest will move here)."""
