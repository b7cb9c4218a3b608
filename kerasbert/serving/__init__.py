"""Serving exports as TF Serving does: loading, versions, batching and the REST API. No training code."""
