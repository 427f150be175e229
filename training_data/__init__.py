"""Training data: point-in-time training sets built through Feast's get_historical_features (issue 5)."""
