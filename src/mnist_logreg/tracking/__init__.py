"""What a run is called and compared by, and its MLflow record."""
