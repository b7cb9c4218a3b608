"""The op check: an export may use only ops that TF Serving's model server has.

TF Serving's model server registers core TensorFlow's ops and TensorFlow
Text's; a SavedModel with any other op fails to load there. Which op comes
from where is asked of a fresh process (`kerasbert.exporting.op_probe`),
once per process.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from kerasbert.exporting.inspection import read_saved_model


class UnsupportedOpsError(ValueError):
    """The exported graph uses ops that TF Serving would not know."""


@dataclass(frozen=True)
class OpSources:
    """Which ops a TF Serving model server with TF Text can run.

    Attributes:
        core: ops TensorFlow itself registers.
        text: ops from TensorFlow Text's op libraries.
        other_libraries: `{library file: ops}` for op libraries that
            `import tensorflow` loads besides (e.g. TF Lite's
            `AudioMicrofrontend`): registered in every Python process, yet
            not part of core TensorFlow nor of TF Serving.
    """

    core: frozenset
    text: frozenset
    other_libraries: dict


_op_sources_lock = threading.Lock()


def op_sources() -> OpSources:
    """Core TensorFlow and TensorFlow Text op names, from a clean process.

    "Core" is what a process that imports only `tensorflow` has registered,
    minus the ops of op libraries that import loaded with
    `tf.load_op_library`; "TF Text" is the ops of the op libraries
    `import tensorflow_text` loads. This process can't tell them apart: it
    may have imported TF Text (keras-hub does) or other op libraries before.
    Computed once per process (a few seconds).

    Raises:
        RuntimeError: the probe process failed, or found no TF Text ops.
    """
    # One probe at a time: `export_model` starts one in the background.
    with _op_sources_lock:
        return _probe_op_sources()


def prefetch_op_sources():
    try:
        op_sources()
    except Exception:  # noqa: BLE001  (check_ops calls again and raises it)
        pass


@functools.lru_cache(maxsize=1)
def _probe_op_sources() -> OpSources:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "kerasbert.exporting.op_probe"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise RuntimeError(f"could not list TensorFlow's registered ops: {tail}")
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    libraries = probe["libraries"]
    other = libraries.get("tensorflow", {})
    from_other = {op for ops in other.values() for op in ops}
    text = frozenset(op for ops in libraries.get("tensorflow_text", {}).values() for op in ops)
    if not text:
        raise RuntimeError("importing tensorflow_text loaded no op library; cannot check ops")
    core = frozenset(set(probe["registered"]) - from_other)
    return OpSources(core=core, text=text, other_libraries=other)


def graph_ops(saved_model_dir) -> set[str]:
    """Every op type in a SavedModel: graph nodes and function library nodes.

    A node whose op is a function of the library (a direct function call) is
    not an op and is left out.
    """
    ops = set()
    for meta_graph in read_saved_model(saved_model_dir).meta_graphs:
        library = meta_graph.graph_def.library
        functions = {function.signature.name for function in library.function}
        nodes = [node.op for node in meta_graph.graph_def.node]
        for function in library.function:
            nodes.extend(node.op for node in function.node_def)
        ops.update(op for op in nodes if op not in functions)
    return ops


def check_ops(saved_model_dir) -> dict[str, list[str]]:
    """Checks that a SavedModel uses only core TensorFlow and TF Text ops.

    TF Serving's model server registers core TensorFlow and TensorFlow
    Text's ops; a SavedModel with any other op fails to load there.

    Args:
        saved_model_dir: a SavedModel directory.

    Returns:
        `{"core": [...], "text": [...]}`: the ops used, by source.

    Raises:
        UnsupportedOpsError: naming each op from elsewhere.

    Example:
    >>> check_ops("saved_models/quickstart/1")["text"]
    ['CaseFoldUTF8', 'FastWordpieceTokenizeWithOffsets', 'RegexSplitWithOffsets']
    """
    sources = op_sources()
    used = graph_ops(saved_model_dir)
    unsupported = sorted(used - sources.core - sources.text)
    if unsupported:
        described = []
        for op in unsupported:
            library = next(
                (path for path, ops in sources.other_libraries.items() if op in ops), None
            )
            described.append(f"{op} (from {Path(library).name})" if library else op)
        raise UnsupportedOpsError(
            f"The exported graph uses {len(unsupported)} op(s) that are neither core "
            f"TensorFlow nor TensorFlow Text ops: {', '.join(described)}. TF Serving "
            "would fail to load it; build the model and tokenizer from TensorFlow "
            "and TensorFlow Text ops only."
        )
    return {
        "core": sorted(used & sources.core),
        "text": sorted(used & sources.text),
    }
