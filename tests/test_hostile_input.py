"""Hostile data files and arguments through every command, and nothing they can damage.

Each named file below is one a user could plausibly hand kerasbert: broken
quoting, the wrong encoding, NUL bytes, a megabyte of text in one cell,
missing labels, repeated headers, an empty file, a directory, a corrupt
archive or Parquet file. `train`, `predict` and `evaluate` must refuse the
unreadable ones with exit status 2 and one `error:` line (checked before any
model loads), and read the odd-but-valid ones. The last tests throw bad input
at every command around an existing run directory, export and output files,
and check with hashes that not a byte of them changed.
"""

import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from kerasbert import evaluate, export, predict, train
from kerasbert.config import DataConfig
from kerasbert.data.splits import load_splits
from kerasbert.data.tables import DataError, read_table
from kerasbert.evaluation.saved_model_classifier import read_model_labels
from tests.support.tiny import QUICKSTART_CSV, REPO, tiny_config_dict
from tests.test_fuzz import assert_refused, run_cli, tensorflow_started, time_limit  # noqa: F401

SUBPROCESS_SECONDS = 240  # a cold TensorFlow import on a busy two-core machine
# TensorFlow's native start-up logging (absl) goes to stderr before any
# kerasbert code runs and whatever TF_CPP_MIN_LOG_LEVEL says; it is not ours.
NATIVE_LOG = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl::InitializeLog)")


# === Hostile files ===


def _reviews(n=60):
    """Quickstart rows: three classes the model knows, enough for a stratified split."""
    return pd.read_csv(QUICKSTART_CSV).head(n)


def _csv(frame=None, **kwargs) -> bytes:
    return (_reviews() if frame is None else frame).to_csv(index=False, **kwargs).encode()


def _odd_rows() -> pd.DataFrame:
    frame = _reviews()
    frame.loc[0, "text"] = "a NUL \x00 in the middle"
    frame.loc[1, "text"] = "escape \x1b[31m red \x07 bell"
    frame.loc[2, "text"] = "x" * 1_000_000
    frame.loc[3, "text"] = "emoji 😀, 日本語 and ünïcödé"
    return frame


def _parquet(frame=None, **kwargs) -> bytes:
    buffer = io.BytesIO()
    (_reviews() if frame is None else frame).to_parquet(buffer, **kwargs)
    return buffer.getvalue()


def _parquet_with_bad_utf8() -> bytes:
    # Uncompressed, so the string bytes are in the file to overwrite.
    data = _parquet(_reviews().assign(text="é marks the spot"), compression="none")
    return data.replace("é".encode(), b"\xff\xfe")


def _jsonl(frame=None) -> bytes:
    return (
        (_reviews() if frame is None else frame)
        .to_json(orient="records", lines=True, force_ascii=False)
        .encode()
    )


@dataclass
class Hostile:
    """A hostile data file and what every command must make of it.

    Attributes:
        name: the file name (its extension picks the reader).
        content: a function returning the bytes, or None for a missing file.
        outcome: `unreadable` (no reader takes it), `no-columns` (read, but
            without the text and label columns), `unusable` (nothing to train
            on) or `loads` (odd, but fine).
    """

    name: str
    content: Callable[[], bytes] | None
    outcome: str

    def write(self, directory) -> Path:
        path = Path(directory) / self.name
        if self.content is not None:
            path.write_bytes(self.content())
        return path


HOSTILE = [
    Hostile("broken-quoting.csv", lambda: _csv() + b'"never closed,positive\n', "unreadable"),
    Hostile(
        "latin1-in-utf8.csv",
        lambda: _csv() + "café au lait,positive\n".encode("latin-1"),
        "unreadable",
    ),
    Hostile("utf16-with-bom.csv", lambda: _reviews().to_csv(index=False).encode("utf-16"), "loads"),
    Hostile(
        "utf16-big-endian.tsv",
        lambda: b"\xfe\xff" + _reviews().to_csv(index=False, sep="\t").encode("utf-16-be"),
        "loads",
    ),
    Hostile("utf8-with-bom.csv", lambda: b"\xef\xbb\xbf" + _csv(), "loads"),
    Hostile(
        "nul-bytes.csv",
        lambda: _csv(_odd_rows().head(60).assign(text=lambda f: f.text.str.slice(0, 100))),
        "loads",
    ),
    Hostile("megabyte-text.csv", lambda: _csv(_odd_rows()), "loads"),
    Hostile(
        "nul-in-header.csv", lambda: b"te\x00xt,label\n" + _csv().split(b"\n", 1)[1], "no-columns"
    ),
    Hostile(
        "megabyte-header.csv",
        lambda: ("h" * 1_000_000 + ",label\n").encode() + _csv().split(b"\n", 1)[1],
        "no-columns",
    ),
    Hostile(
        "some-labels-missing.csv",
        lambda: _csv(_reviews().assign(label=lambda f: f.label.mask(f.index % 10 == 0))),
        "loads",
    ),
    Hostile("no-labels.csv", lambda: _csv(_reviews().assign(label=None)), "unusable"),
    Hostile("one-class.csv", lambda: _csv(_reviews().assign(label="positive")), "unusable"),
    Hostile(
        "repeated-header.csv",
        lambda: b"text,label,label\n" + b"a,positive,negative\n" * 30,
        "unreadable",
    ),
    Hostile(
        "repeated-text-header.csv",
        lambda: _csv().replace(b"text,label", b"text,text", 1),
        "unreadable",
    ),
    Hostile(
        "dotted-names.csv",
        lambda: _csv(_reviews().assign(**{"text.1": "a column, not a repeat"})),
        "loads",
    ),
    Hostile("empty.csv", lambda: b"", "unreadable"),
    Hostile("blank-lines.csv", lambda: b"\n\n\n", "unreadable"),
    Hostile("only-a-bom.csv", lambda: b"\xef\xbb\xbf", "unreadable"),
    Hostile("header-only.csv", lambda: b"text,label\n", "unusable"),
    Hostile("ragged-rows.csv", lambda: _csv() + b"one,two,three,four\n", "unreadable"),
    Hostile("crlf-and-cr.csv", lambda: _csv().replace(b"\n", b"\r\n"), "loads"),
    Hostile("missing.csv", None, "unreadable"),
    Hostile("reviews.txt", _csv, "unreadable"),
    Hostile("reviews.xlsx", lambda: b"PK\x03\x04 not really a spreadsheet", "unreadable"),
    Hostile("parquet-named.csv", _parquet, "unreadable"),
    Hostile("csv-named.parquet", _csv, "unreadable"),
    Hostile("junk.parquet", lambda: b"PAR1" + b"\x00junk" * 100 + b"PAR1", "unreadable"),
    Hostile("truncated.parquet", lambda: _parquet()[: len(_parquet()) // 2], "unreadable"),
    Hostile("empty.parquet", lambda: b"", "unreadable"),
    Hostile("bad-utf8-strings.parquet", _parquet_with_bad_utf8, "unreadable"),
    Hostile(
        "nulls.parquet",
        lambda: _parquet(_reviews().assign(text=lambda f: f.text.mask(f.index % 10 == 0))),
        "loads",
    ),
    Hostile("cut-line.jsonl", lambda: _jsonl() + b'{"text": "b", "label\n', "unreadable"),
    Hostile("csv-named.jsonl", _csv, "unreadable"),
    Hostile("arrays.jsonl", lambda: b"[1, 2]\n[3, 4]\n", "no-columns"),
    Hostile("empty.jsonl", lambda: b"", "no-columns"),
    Hostile(
        "huge-number.jsonl", lambda: b'{"text": "a", "label": 1' + b"0" * 400 + b"}\n", "unreadable"
    ),
    Hostile(
        "lone-surrogates.jsonl",
        lambda: _jsonl().replace(b'"text":"', b'"text":"\\ud800 ', 5),
        "loads",
    ),
    Hostile("truncated.csv.gz", lambda: gzip.compress(_csv())[:60], "unreadable"),
    Hostile("not-gzip.csv.gz", _csv, "unreadable"),
    Hostile("not-zip.csv.zip", _csv, "unreadable"),
    Hostile("not-xz.csv.xz", _csv, "unreadable"),
    Hostile("not-bz2.csv.bz2", _csv, "unreadable"),
    Hostile("name-" + "n" * 5_000 + ".csv", None, "unreadable"),
    Hostile("escape-\x1b[2J-bell-\x07-in-name.csv", None, "unreadable"),
]
REFUSED = [h for h in HOSTILE if h.outcome != "loads"]
# Refused by predict and evaluate too, before any model loads.
UNREADABLE = [h for h in HOSTILE if h.outcome in ("unreadable", "no-columns")]


def _ids(cases):
    return [case.name[:40] for case in cases]


def _directory_case(tmp_path):
    directory = tmp_path / "a-directory.csv"
    directory.mkdir()
    return directory


@pytest.mark.parametrize("hostile", HOSTILE, ids=_ids(HOSTILE))
def test_hostile_file_loads_or_is_refused_in_one_line(hostile, tmp_path):
    path = hostile.write(tmp_path)
    with time_limit():
        try:
            splits = load_splits(DataConfig(path=str(path), split={"validation": 0.2, "test": 0.2}))
        except DataError as e:
            message = str(e)
        else:
            assert hostile.outcome == "loads", "read and split without complaint"
            assert len(splits.labels) >= 2 and len(splits.train)
            return
    assert hostile.outcome != "loads", f"refused: {message[:500]}"
    assert "\n" not in message
    if hostile.outcome != "unusable":  # a problem of the file, not of its rows
        assert str(path) in message
    if hostile.outcome == "unreadable":
        with pytest.raises(DataError):
            read_table(path)
    else:
        read_table(path)  # reads: what is missing is columns or rows


def test_a_directory_is_refused_as_a_directory(tmp_path):
    with pytest.raises(DataError, match=r"is a directory; give a data file"):
        read_table(_directory_case(tmp_path))


def _train_config(tmp_path, data_path, **sections):
    return _write_yaml(tmp_path / "run.yaml", tiny_config_dict(data_path, tmp_path, **sections))


def _write_yaml(path, raw):
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.mark.parametrize("hostile", REFUSED, ids=_ids(REFUSED))
def test_train_refuses_hostile_file_in_one_line(hostile, tmp_path, capsys, tensorflow_started):
    path = hostile.write(tmp_path)
    with pytest.raises(DataError) as refused:
        load_splits(DataConfig(path=str(path), split={"validation": 0.2, "test": 0.2}))
    status, _, err = run_cli(train.main, ["--config", _train_config(tmp_path, path)], capsys)
    assert_refused(status, err, expected=refused.value)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "saved_models").exists()


def test_train_refuses_a_directory_as_data(tmp_path, capsys, tensorflow_started):
    config = _train_config(tmp_path, _directory_case(tmp_path))
    status, _, err = run_cli(train.main, ["--config", config], capsys)
    assert_refused(status, err)
    assert "is a directory" in err


# === predict and evaluate: refused before any model loads ===


@pytest.fixture
def existing_output(tmp_path):
    """A predictions file from an earlier run, which a failed run must leave alone."""
    path = tmp_path / "earlier" / "predictions.csv"
    path.parent.mkdir()
    path.write_text("text,predicted_label\nkeep me,positive\n", encoding="utf-8")
    return path


def _snapshot(*roots) -> dict:
    """`{path: sha256 or "dir"}` for everything under `roots` (hidden entries included)."""
    found = {}
    for root in roots:
        root = Path(root)
        if root.is_file():
            found[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for directory, _, filenames in os.walk(root):
            found[directory] = "dir"
            for name in filenames:
                path = Path(directory) / name
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.mark.parametrize("hostile", UNREADABLE, ids=_ids(UNREADABLE))
def test_predict_refuses_hostile_input_and_keeps_the_existing_output(
    hostile, tmp_path, capsys, exported_model, existing_output
):
    path = hostile.write(tmp_path)
    before = _snapshot(existing_output.parent)
    status, _, err = run_cli(
        predict.main,
        ["--model", exported_model, "--input", path, "--output", existing_output, "--no-progress"],
        capsys,
    )
    assert_refused(status, err)
    assert _snapshot(existing_output.parent) == before


@pytest.mark.parametrize("hostile", UNREADABLE, ids=_ids(UNREADABLE))
def test_evaluate_refuses_hostile_data_and_keeps_the_output_directory(
    hostile, tmp_path, capsys, exported_model
):
    path = hostile.write(tmp_path)
    output = tmp_path / "evaluation"
    output.mkdir()
    (output / "metrics.json").write_text('{"accuracy": 1.0}\n', encoding="utf-8")
    before = _snapshot(output)
    status, _, err = run_cli(
        evaluate.main,
        ["--model", exported_model, "--data", path, "--output", output, "--no-progress"],
        capsys,
    )
    assert_refused(status, err)
    assert _snapshot(output) == before


# === predict and evaluate on odd files that are valid (these load the model) ===


def test_predict_writes_every_row_of_an_odd_utf16_file_in_order(tmp_path, capsys, exported_model):
    frame = _odd_rows().head(6)
    frame.loc[4, "text"] = None
    frame.loc[5, "text"] = "NA"
    path = tmp_path / "odd.csv"
    path.write_bytes(frame.to_csv(index=False).encode("utf-16"))
    output = tmp_path / "predictions.csv"
    status, out, err = run_cli(
        predict.main,
        ["--model", exported_model, "--input", path, "--output", output, "--no-progress"],
        capsys,
        seconds=120,
    )
    assert status == 0, err
    written = pd.read_csv(output, keep_default_na=False)
    assert len(written) == 6
    assert written["label"].tolist() == frame["label"].tolist()
    assert set(written["predicted_label"]) <= set(read_model_labels(exported_model))
    assert written.loc[2, "text"] == "x" * 1_000_000


def test_predict_reads_lone_surrogates_in_json_lines(tmp_path, capsys, exported_model):
    path = tmp_path / "odd.jsonl"
    path.write_bytes(b'{"text": "\\ud800 lone high surrogate"}\n{"text": "fine"}\n{"text": null}\n')
    output = tmp_path / "predictions.jsonl"
    status, _, err = run_cli(
        predict.main,
        ["--model", exported_model, "--input", path, "--output", output, "--no-progress"],
        capsys,
        seconds=120,
    )
    assert status == 0, err
    assert len(output.read_text(encoding="utf-8").splitlines()) == 3


def test_evaluate_drops_rows_without_a_label(tmp_path, capsys, exported_model):
    frame = _reviews(30)
    frame.loc[[0, 1], "label"] = None
    frame.loc[2, "text"] = "y" * 1_000_000
    path = tmp_path / "gaps.csv"
    frame.to_csv(path, index=False)
    output = tmp_path / "evaluation"
    status, _, err = run_cli(
        evaluate.main,
        ["--model", exported_model, "--data", path, "--output", output, "--no-progress"],
        capsys,
        seconds=120,
    )
    assert status == 0, err
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["dropped_rows"] == 2 and metrics["num_examples"] == 28


def test_evaluate_refuses_a_file_whose_labels_are_all_missing(tmp_path, capsys, exported_model):
    path = tmp_path / "no-labels.csv"
    _reviews(10).assign(label=None).to_csv(path, index=False)
    output = tmp_path / "evaluation"
    status, _, err = run_cli(
        evaluate.main,
        ["--model", exported_model, "--data", path, "--output", output, "--no-progress"],
        capsys,
        seconds=120,
    )
    assert_refused(status, err)
    assert not (output / "metrics.json").exists()


# === A file that vanishes ===


def test_train_refuses_data_deleted_after_the_config_is_read(
    tmp_path, capsys, monkeypatch, tensorflow_started
):
    data = tmp_path / "reviews.csv"
    data.write_bytes(_csv())
    import kerasbert.config_loading

    read_config = kerasbert.config_loading.load_config

    def read_then_delete(*args, **kwargs):
        config = read_config(*args, **kwargs)
        data.unlink()
        return config

    monkeypatch.setattr(kerasbert.config_loading, "load_config", read_then_delete)
    status, _, err = run_cli(train.main, ["--config", _train_config(tmp_path, data)], capsys)
    assert_refused(status, err)
    assert f"{data}: no such data file" in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_data_deleted_while_it_is_being_opened_is_refused(
    tmp_path, capsys, monkeypatch, exported_model, suffix
):
    # The file is there when read_table checks, and gone when pandas opens it.
    path = tmp_path / f"reviews{suffix}"
    path.write_bytes({".csv": _csv, ".jsonl": _jsonl, ".parquet": _parquet}[suffix]())
    for module, name in ((pd, "read_csv"), (pd, "read_json"), (pq, "read_table")):
        real = getattr(module, name)

        def vanish_then(*args, _real=real, **kwargs):
            path.unlink(missing_ok=True)
            return _real(*args, **kwargs)

        monkeypatch.setattr(module, name, vanish_then)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: cannot read it as"):
        read_table(path)
    path.write_bytes(b"text\nback again\n")
    status, _, err = run_cli(
        predict.main,
        [
            "--model",
            exported_model,
            "--input",
            path,
            "--output",
            tmp_path / "p.csv",
            "--no-progress",
        ],
        capsys,
    )
    assert_refused(status, err)
    assert not (tmp_path / "p.csv").exists()


# === Nothing corrupts an existing run or export ===


def test_bad_input_to_every_command_leaves_run_export_and_outputs_untouched(
    trained_run, tmp_path, capsys, tensorflow_started
):
    run_dir, export_dir = trained_run.run_dir, trained_run.export_dir
    from kerasbert.rundir import read_status

    assert read_status(run_dir) == "finished"  # so --resume below can never train
    model_base = export_dir.parent  # saved_models/<name>, every version
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    earlier = outputs / "predictions.csv"
    earlier.write_text("text,predicted_label\nkeep me,positive\n", encoding="utf-8")
    hostile = {
        h.name: h.write(tmp_path)
        for h in HOSTILE
        if h.name in ("broken-quoting.csv", "junk.parquet", "arrays.jsonl")
    }
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text(
        (run_dir / "config.yaml").read_text(encoding="utf-8") + "\tname: [unclosed\n",
        encoding="utf-8",
    )
    other_config = tmp_path / "other.yaml"
    raw = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    raw["data"]["path"] = str(hostile["broken-quoting.csv"])
    _write_yaml(other_config, raw)
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n", encoding="utf-8")
    before = _snapshot(run_dir.parent, model_base, outputs)

    model = str(export_dir)
    cases = [
        # train: a broken config, a finished run, another config, a run that is not one.
        (train.main, ["--config", broken_yaml, "--resume", run_dir]),
        (train.main, ["--config", run_dir / "config.yaml", "--resume", run_dir]),
        (train.main, ["--config", other_config, "--resume", run_dir]),
        (train.main, ["--config", run_dir / "config.yaml", "--resume", export_dir]),
        (train.main, ["--config", other_config]),  # hostile data, same runs_dir and base_path
        # export: a version that exists, bad versions and names, not a run.
        (export.main, ["--run", run_dir, "--version", export_dir.name]),
        (export.main, ["--run", run_dir, "--version", "0"]),
        (export.main, ["--run", run_dir, "--version", "one"]),
        (export.main, ["--run", run_dir, "--model-name", "../escape"]),
        (export.main, ["--run", export_dir]),
        (export.main, ["--run", a_file]),
        (export.main, ["--inspect", run_dir]),
        # predict: hostile inputs onto files that exist, including the run's own.
        *[
            (predict.main, ["--model", model, "--input", path, "--output", output, "--no-progress"])
            for path in hostile.values()
            for output in (earlier, run_dir / "metrics.json", export_dir / "assets" / "labels.txt")
        ],
        (predict.main, ["--model", run_dir, "--input", QUICKSTART_CSV, "--output", earlier]),
        (predict.main, ["--model", model, "--input", QUICKSTART_CSV, "--output", run_dir]),
        # evaluate: hostile data into the run directory itself, and onto a file.
        *[
            (
                evaluate.main,
                ["--model", model, "--data", path, "--output", run_dir, "--no-progress"],
            )
            for path in hostile.values()
        ],
        (evaluate.main, ["--model", model, "--data", QUICKSTART_CSV, "--output", earlier]),
        (
            evaluate.main,
            [
                "--model",
                model,
                "--data",
                QUICKSTART_CSV,
                "--label-column",
                "text",
                "--output",
                run_dir,
            ],
        ),
    ]
    for main, argv in cases:
        status, _, err = run_cli(main, argv, capsys)
        assert_refused(status, err)
    # Loads the model, then cannot create the model directory under a file.
    status, _, err = run_cli(
        export.main, ["--run", run_dir, "--base-path", a_file], capsys, seconds=180
    )
    assert_refused(status, err)
    assert _snapshot(run_dir.parent, model_base, outputs) == before
    assert a_file.read_text(encoding="utf-8") == "not a directory\n"


# === As a real process ===


def _run_process(module, *args, cwd):
    result = subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_SECONDS,
    )
    ours = [line for line in result.stderr.splitlines() if not NATIVE_LOG.match(line)]
    return result.returncode, "".join(f"{line}\n" for line in ours)


def test_commands_refuse_hostile_input_as_processes(tmp_path, exported_model, existing_output):
    before = _snapshot(existing_output)
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("name: x\n\tdata: [unclosed\n", encoding="utf-8")
    hostile = HOSTILE[0].write(tmp_path)
    long_name = tmp_path / ("n" * 5_000 + ".csv")
    for module, args in [
        ("kerasbert.train", ["--config", broken_yaml]),
        ("kerasbert.train", ["--config", tmp_path]),
        (
            "kerasbert.predict",
            ["--model", exported_model, "--input", hostile, "--output", existing_output],
        ),
        (
            "kerasbert.predict",
            ["--model", exported_model, "--input", QUICKSTART_CSV, "--output", long_name],
        ),
        (
            "kerasbert.evaluate",
            ["--model", exported_model, "--data", long_name, "--output", tmp_path],
        ),
    ]:
        status, err = _run_process(module, *args, cwd=REPO)
        assert_refused(status, err)
    assert _snapshot(existing_output) == before


def test_export_of_an_existing_version_is_refused_as_a_process(trained_run):
    before = _snapshot(trained_run.export_dir.parent)
    status, err = _run_process(
        "kerasbert.export",
        "--run",
        trained_run.run_dir,
        "--version",
        trained_run.export_dir.name,
        cwd=REPO,
    )
    assert_refused(status, err)
    assert "already exists" in err
    assert _snapshot(trained_run.export_dir.parent) == before
