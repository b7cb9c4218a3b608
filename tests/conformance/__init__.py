"""The REST API conformance suite: the same cases against kerasbert.serve or TF Serving."""
