"""TF Serving's REST dialect: errors, JSON requests to tensors, tensors to JSON responses."""
