"""Stage: point-in-time training sets through Feast's get_historical_features, split by time, with a feature
report, a train-only preprocessor and a baseline evaluation (installed as `feedstore.training_data`)."""
