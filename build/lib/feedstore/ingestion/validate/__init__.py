"""Stage: the validation gate for raw data. GX suites decide, bad rows are quarantined with a reason, nothing is
lost (rows in = validated + quarantined). reading -> view -> GX -> quarantine -> reports -> publish (run.py)."""
