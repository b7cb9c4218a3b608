"""Checks on an export that several test modules share."""


def assert_session_answers_like_tf2_load(
    version_dir, signatures=("serving_default", "predict_tokens", "classify")
):
    """The export, loaded as TF Serving loads it, answers as `tf.saved_model.load` does.

    Every warm-up record (between them every signature) runs in a TF1
    Session on the MetaGraph (`SavedModelBundle`) and through the TF2
    loader's signatures; each output must agree to 1e-5.
    """
    import numpy as np
    import tensorflow as tf

    from kerasbert.serving.saved_model_bundle import SavedModelBundle, warmup_requests

    bundle = SavedModelBundle(version_dir)
    loaded = tf.saved_model.load(str(version_dir))
    requests = list(warmup_requests(version_dir))
    assert {request.signature_key for request in requests} == set(bundle.signature_defs)
    assert set(bundle.signature_defs) == set(signatures)
    for request in requests:
        served = bundle.run(request.signature_key, request.inputs)
        tensors = {name: tf.constant(value) for name, value in request.inputs.items()}
        expected = loaded.signatures[request.signature_key](**tensors)
        assert set(served) == set(expected)
        for name, value in expected.items():
            value = value.numpy()
            if value.dtype.kind == "f":
                np.testing.assert_allclose(served[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
            else:
                np.testing.assert_array_equal(served[name], value, err_msg=name)
    bundle.close()
