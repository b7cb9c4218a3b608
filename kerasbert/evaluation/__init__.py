"""Scoring an export: metrics, predictions, and the run reports with their plots."""
