"""Tracking: MLflow runs, the Tune callback, the model registry, store URLs and credential masking, study plots,
links into the MLflow UI."""
