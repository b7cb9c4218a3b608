"""From a trained classifier to a SavedModel that TF Serving loads, checked as TF Serving loads it."""
