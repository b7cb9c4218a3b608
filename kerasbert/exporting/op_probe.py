"""Lists the ops TensorFlow and TensorFlow Text register, by source; run in a fresh process.

`python -m kerasbert.exporting.op_probe` prints one JSON line last:
`{"registered": [ops after import tensorflow], "libraries": {"tensorflow" |
"tensorflow_text": {library file: [ops]}}}`.

A fresh interpreter is needed: a process that has imported keras-hub has
already loaded TF Text, and whatever else was imported may have loaded op
libraries of its own. `tf.load_op_library` is wrapped as soon as its module
runs (a meta path finder, installed before TensorFlow is imported), so every
op library that `import tensorflow` and then `import tensorflow_text` load
is recorded with the ops it registered. Nothing at this module's top level
imports TensorFlow; `main` does, in order.
"""

import importlib.machinery
import json
import sys

LOADED = []
PHASE = ["tensorflow"]


class RecordOpLibraries:
    """A meta path finder that wraps `load_op_library` when its module loads."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "tensorflow.python.framework.load_library":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            original = module.load_op_library

            def load_op_library(library_filename):
                LOADED.append((PHASE[0], str(library_filename)))
                return original(library_filename)

            module.load_op_library = load_op_library

        spec.loader.exec_module = exec_module
        return spec


def main():
    sys.meta_path.insert(0, RecordOpLibraries)
    import tensorflow  # noqa: F401
    from tensorflow.core.framework import op_def_pb2
    from tensorflow.python.client import pywrap_tf_session as c_api

    def registered():
        buffer = c_api.TF_GetAllOpList()
        return sorted(op.name for op in op_def_pb2.OpList.FromString(c_api.TF_GetBuffer(buffer)).op)

    def library_ops(filename):
        # A library loaded before returns the ops it registered then.
        handle = c_api.TF_LoadLibrary(filename)
        try:
            return sorted(
                op.name for op in op_def_pb2.OpList.FromString(c_api.TF_GetOpList(handle)).op
            )
        finally:
            c_api.TF_DeleteLibraryHandle(handle)

    after_tensorflow = registered()
    PHASE[0] = "tensorflow_text"
    import tensorflow_text  # noqa: F401

    libraries = {}
    for when, filename in LOADED:
        libraries.setdefault(when, {})[filename] = library_ops(filename)
    # The last line of stdout, whatever else may have been printed before it.
    print("\n" + json.dumps({"registered": after_tensorflow, "libraries": libraries}))


if __name__ == "__main__":
    main()
