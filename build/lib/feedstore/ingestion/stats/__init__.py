"""Stage: timestamped user, item and user x item statistics compiled from the feature spec (compute.py), and the
GX gate on them (gate.py)."""
