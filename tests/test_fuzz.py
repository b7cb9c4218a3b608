"""Seeded fuzzing of configs and data files through `python -m kerasbert.train`.

Every case is generated from a fixed seed, so a failing id reproduces. A case
either passes validation (and is then never trained on) or is refused by the
command with exit status 2 and exactly one stderr line starting with
`error:`; a traceback, a second line or another exit status fails the test.
Each case runs in-process under a time limit (`time_limit`), so a YAML bomb or
a pathological file fails as a timeout instead of hanging the suite.
"""

import contextlib
import copy
import random
import signal

import pytest
import yaml

from kerasbert import cli, train
from kerasbert.config import ConfigError, DataConfig
from kerasbert.config_loading import dump_config, load_config
from kerasbert.data.splits import load_splits
from kerasbert.data.tables import DataError
from tests.support.tiny import QUICKSTART_CSV, REPO, make_reviews, tiny_config_dict

SEED = 8  # issue 8; change it to explore other cases, not to make one pass
CASE_SECONDS = 20  # generous: the machine is shared; a real hang takes forever
QUICKSTART_YAML = REPO / "configs" / "quickstart.yaml"


# === Harness ===


class CaseTimeout(BaseException):
    """A case ran past its time limit (a BaseException so no `except` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds=CASE_SECONDS):
    """Raises `CaseTimeout` in the main thread after `seconds` of wall time."""

    def expire(signum, frame):
        raise CaseTimeout(f"the case ran past its {seconds} s limit")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_cli(main, argv, capsys, seconds=CASE_SECONDS):
    """`main(argv)` in-process under a time limit; returns `(status, stdout, stderr)`."""
    capsys.readouterr()
    with time_limit(seconds):
        status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def assert_refused(status, err, expected=None):
    """Exit 2 with exactly one stderr line, `error: ...`, and no traceback.

    Args:
        expected: the exception the library raised for the same input; the
            line must then be its message as `cli.error_line` prints it.
    """
    assert "Traceback" not in err, err[:2000]
    assert status == 2, f"exit status {status}; stderr: {err[:2000]}"
    lines = err.splitlines()
    assert len(lines) == 1, f"{len(lines)} stderr lines: {err[:2000]}"
    assert lines[0].startswith("error: "), lines[0][:2000]
    assert len(lines[0]) < cli.MAX_MESSAGE + 200
    assert lines[0].isprintable(), f"control characters in {lines[0][:2000]!r}"
    if expected is not None:
        assert lines[0] == f"error: {cli.error_line(expected)}"


# === Config cases ===

SWAPS = ["text", 7, -3, 2.5, [1, "a"], {"key": "value"}, None, True, False, "", []]
ABSURD = [
    -1,
    0,
    -0.0,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    5e-324,
    2**31,
    2**32,
    2**64,
    10**100,
    -(2**63),
    "1e999",
    10**4000,
]
JUNK_KEYS = ["foo", "", "🙂", "k" * 300, "1", "null", "learning_rate", "data"]


def _typos(key):
    key = str(key)
    out = [key.upper(), key + "s", key.replace("_", "-"), "_" + key]
    if len(key) > 1:
        out += [key[1:], key[:-1], key[1] + key[0] + key[2:]]
    return [t for t in out if t != key]


def _paths(node, prefix=()):
    """Every key path in a nested dict/list, e.g. ("training", "schedule", "mode")."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield prefix + (key,)
        yield from _paths(value, prefix + (key,))


def _parent(raw, path):
    node = raw
    for key in path[:-1]:
        node = node[key]
    return node


def _mutate(raw, rng):
    """One random deletion, type swap, unknown key, absurd number or long string."""
    paths = list(_paths(raw))
    path = rng.choice(paths)
    parent, key = _parent(raw, path), path[-1]
    op = rng.choice(["delete", "swap", "unknown", "absurd", "absurd", "long"])
    if op == "delete":
        del parent[key]
    elif op == "swap":
        current = type(parent[key])
        parent[key] = copy.deepcopy(rng.choice([v for v in SWAPS if type(v) is not current]))
    elif op == "unknown":
        sections = [raw] + [_parent(raw, p + (None,)) for p in paths]
        section = rng.choice([s for s in sections if isinstance(s, dict)])
        names = JUNK_KEYS + [t for k in section for t in _typos(k)]
        section[rng.choice(names)] = copy.deepcopy(rng.choice(SWAPS))
    elif op == "absurd":
        parent[key] = rng.choice(ABSURD)
    else:
        parent[key] = rng.choice(["x", "é", "\x07"]) * rng.choice([1_000, 20_000])
    return op


def _base_configs():
    return {
        "quickstart": yaml.safe_load(QUICKSTART_YAML.read_text(encoding="utf-8")),
        "tiny": tiny_config_dict(QUICKSTART_CSV, "/nonexistent/kerasbert-fuzz"),
    }


def structural_cases(count):
    """Configs with 1 to 3 random mutations, rendered as YAML."""
    rng = random.Random(SEED)
    bases = _base_configs()
    cases = []
    for i in range(count):
        name = rng.choice(sorted(bases))
        raw = copy.deepcopy(bases[name])
        ops = [_mutate(raw, rng) for _ in range(rng.randint(1, 3))]
        text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
        cases.append(pytest.param(text, id=f"{name}-{i:03d}-{'+'.join(ops)}"))
    return cases


def _corrupt_text(text, rng):
    lines = text.splitlines(keepends=True)
    i = rng.randrange(1, len(lines))
    op = rng.choice(
        ["tab", "unclosed", "binary", "truncate", "duplicate", "nul", "indent", "colon", "quote"]
    )
    if op == "tab":
        lines[i] = "\t" + lines[i]
    elif op == "unclosed":
        lines[i] = lines[i].rstrip("\n") + rng.choice([" [", " {", " [a, {b: "]) + "\n"
    elif op == "binary":
        junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        cut = rng.randrange(len(text))
        return op, text[:cut].encode() + junk + text[cut:].encode()
    elif op == "truncate":
        return op, text[: rng.randrange(len(text))]
    elif op == "duplicate":
        keyed = [
            j
            for j, line in enumerate(lines)
            if ":" in line and not line.lstrip().startswith(("-", "#"))
        ]
        j = rng.choice(keyed)
        lines.insert(j + 1, lines[j])
    elif op == "nul":
        lines[i] = lines[i].replace(":", ":\x00", 1) if ":" in lines[i] else "\x00" + lines[i]
    elif op == "indent":
        lines[i] = (
            rng.choice(["   ", " "]) + lines[i] if rng.random() < 0.5 else lines[i].lstrip(" ")
        )
    elif op == "colon":
        lines[i] = lines[i].replace(": ", " ", 1).replace(":", "", 1)
    else:
        lines[i] = lines[i].rstrip("\n") + rng.choice(['"', "'", " '''", ' "\\x"']) + "\n"
    return op, "".join(lines)


def text_cases(count):
    """Valid YAML files (with their comments) broken at the text level."""
    rng = random.Random(SEED + 1)
    sources = {
        "quickstart": QUICKSTART_YAML.read_text(encoding="utf-8"),
        "tiny": yaml.safe_dump(_base_configs()["tiny"], sort_keys=False),
    }
    cases = []
    for i in range(count):
        name = rng.choice(sorted(sources))
        op, text = _corrupt_text(sources[name], rng)
        cases.append(pytest.param(text, id=f"{name}-text-{i:03d}-{op}"))
    return cases


def _bomb(levels=9, width=9):
    """The "billion laughs": `width ** levels` strings if aliases were copied."""
    lines = ["a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for level in range(1, levels):
        lines.append(f"a{level}: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]")
    return lines, f"*a{levels - 1}"


QS = QUICKSTART_YAML.read_text(encoding="utf-8")
BOMB_LINES, BOMB = _bomb()
HANDWRITTEN = {
    "empty-file": "",
    "only-comments": "# nothing here\n# at all\n",
    "document-marker": "---\n",
    "null-document": "~\n",
    "top-level-list": "- name: x\n- data: y\n",
    "top-level-scalar": "quickstart\n",
    "two-documents": "name: a\n---\nname: b\n",
    "bomb-as-name": "\n".join(
        BOMB_LINES + [f"name: {BOMB}", "data: {path: x.csv}", "model: {preset: p}"]
    )
    + "\n",
    "bomb-in-unknown-key": "\n".join(BOMB_LINES) + "\n" + QS,
    "bomb-as-edges": "\n".join(
        BOMB_LINES
        + ["name: x", f"data: {{path: x.csv, binning: {{edges: {BOMB}}}}}", "model: {preset: p}"]
    )
    + "\n",
    "bomb-as-stages": QS.replace("  unfreezing:", f"  unfreezing: {BOMB}\n  x:").replace(
        "name: quickstart", "\n".join(BOMB_LINES) + "\nname: quickstart"
    ),
    "recursive-alias": "name: &n [*n]\ndata: &d {path: x.csv, split: *d}\nmodel: {preset: p}\n",
    "deeply-nested-lists": "name: x\ndata: " + "[" * 3_000 + "]" * 3_000 + "\n",
    "deeply-nested-maps": "name: x\ndata: " + "{a: " * 3_000 + "1" + "}" * 3_000 + "\n",
    "integer-of-5000-digits": "name: x\nseed: " + "9" * 5_000 + "\n",
    "float-overflow": QS.replace("learning_rate: 0.003", "learning_rate: 1.0e999"),
    "duplicate-top-key": QS + "name: again\n",
    "duplicate-nested-key": QS.replace("  epochs: 22", "  epochs: 22\n  epochs: 3"),
    "tab-indent": QS.replace("  epochs: 22", "\tepochs: 22"),
    "unclosed-bracket": "name: x\ndata: {path: x.csv\nmodel: [preset\n",
    "unclosed-quote": 'name: "quickstart\ndata: {path: x.csv}\n',
    "binary-junk": bytes(range(256)) * 4,
    "utf16-with-bom": QS.encode("utf-16"),
    "latin1-bytes": QS.encode("utf-8") + "# café\n".encode("latin-1"),
    "nul-bytes": "name: x\x00\ndata: {path: x.csv}\n",
    "python-object-tag": "name: !!python/object/apply:os.system ['true']\n",
    "binary-tag-not-utf8": "name: !!binary /w==\ndata: {path: x.csv}\nmodel: {preset: p}\n",
    "undefined-alias": "name: *nowhere\n",
    "bad-merge": "base: &b {seed: 1}\nname: x\n<<: [*b, 3]\n",
    "unhashable-key": "? [a, b]\n: 1\nname: x\n",
    "null-key": "~: 1\nname: x\ndata: {path: x.csv}\nmodel: {preset: p}\n",
    "date-as-name": "name: 2024-01-01\ndata: {path: x.csv}\nmodel: {preset: p}\n",
    "set-as-section": "name: x\ndata: !!set {a, b}\nmodel: {preset: p}\n",
    "line-of-a-megabyte": "name: " + "q" * 1_000_000 + "\n",
    "thousands-of-keys": "name: x\n" + "".join(f"k{i}: {i}\n" for i in range(5_000)),
    "same-text-and-label-column": QS.replace("label_column: label", "label_column: text"),
    "negative-seed": QS.replace("seed: 0 ", "seed: -1 "),
    "nan-learning-rate": QS.replace("learning_rate: 0.003", "learning_rate: .nan"),
    "inf-weight-decay": QS.replace("weight_decay: 0.01", "weight_decay: .inf"),
    "batch-size-2-to-the-64": QS.replace("batch_size: 16", "batch_size: 18446744073709551616"),
    "control-characters": "name: \x1b[31mred\x07\ndata: {path: x.csv}\nmodel: {preset: p}\n",
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def check_config_case(content, tmp_path, capsys):
    """Validates `content`; a refused config must be refused the same by the CLI.

    Returns:
        "refused" or "valid".
    """
    path = _write(tmp_path / "run.yaml", content)
    with time_limit():
        try:
            config = load_config(path)
        except ConfigError as e:
            error = e
        else:
            # Validated: it must read back as itself from the config.yaml a
            # run directory stores (what --resume compares).
            again = load_config(_write(tmp_path / "again.yaml", dump_config(config)))
            assert again == config
            return "valid"
    status, out, err = run_cli(train.main, ["--config", path], capsys)
    assert_refused(status, err, expected=error)
    assert out == ""
    assert str(path) in err  # config errors name the file
    return "refused"


STRUCTURAL = structural_cases(120)
TEXTUAL = text_cases(60)


@pytest.mark.parametrize("content", STRUCTURAL)
def test_mutated_config_validates_or_is_refused_in_one_line(content, tmp_path, capsys):
    check_config_case(content, tmp_path, capsys)


@pytest.mark.parametrize("content", TEXTUAL)
def test_broken_yaml_text_is_refused_in_one_line(content, tmp_path, capsys):
    check_config_case(content, tmp_path, capsys)


@pytest.mark.parametrize("content", list(HANDWRITTEN.values()), ids=list(HANDWRITTEN))
def test_hostile_yaml_is_refused_in_one_line(content, tmp_path, capsys):
    assert check_config_case(content, tmp_path, capsys) == "refused"


def test_fuzz_mostly_generates_bad_configs(tmp_path):
    # The fuzz is only worth its time if most cases are bad; a change that
    # made mutations harmless would otherwise pass unnoticed.
    refused = 0
    for i, param in enumerate(STRUCTURAL + TEXTUAL):
        try:
            load_config(_write(tmp_path / f"{i}.yaml", param.values[0]))
        except ConfigError:
            refused += 1
    assert refused >= 150, f"only {refused} of {len(STRUCTURAL) + len(TEXTUAL)} cases were refused"


# === --set overrides ===

OVERRIDES = {
    "no-equals": "training.epochs",
    "empty-key": "=1",
    "blank-key": "  =1",
    "word-for-int": "training.epochs=many",
    "negative": "training.epochs=-1",
    "5000-digits": "training.epochs=" + "9" * 5_000,
    "deep-nesting": "data=" + "[" * 3_000,
    "deep-nesting-closed": "data=" + "[" * 3_000 + "]" * 3_000,
    "into-a-string": "name.first=x",
    "into-a-list": "training.unfreezing.0.epochs=1",
    "empty-part": "training..epochs=1",
    "recursive-alias": "training.epochs=&a [*a]",
    "typo": "training.lerning_rate=0.1",
    "duplicate-keys": "model.scratch={family: bert, family: roberta}",
    "nan-seed": "seed=.nan",
    "inf-learning-rate": "training.learning_rate=.inf",
    "null-data-path": "data.path=",
    "binary-junk": "name=\x00\x01\x02",
    "python-tag": "name=!!python/name:os.system",
}


@pytest.mark.parametrize("override", list(OVERRIDES.values()), ids=list(OVERRIDES))
def test_bad_override_is_refused_in_one_line(override, tmp_path, capsys):
    path = _write(tmp_path / "run.yaml", yaml.safe_dump(tiny_config_dict(QUICKSTART_CSV, tmp_path)))
    with time_limit():
        with pytest.raises(ConfigError) as refused:
            load_config(path, [override])
    status, out, err = run_cli(train.main, ["--config", path, "--set", override], capsys)
    assert_refused(status, err, expected=refused.value)


# === Data files ===


@pytest.fixture(scope="module")
def tensorflow_started():
    """Imports the training side and starts TensorFlow once, outside any time limit.

    `train.main` reaches the data only after `make_strategy`, which starts
    TensorFlow; the first start takes long on a busy machine.
    """
    import kerasbert.training.fit  # noqa: F401  keras and keras-hub, as train.main imports them
    from kerasbert.training.distribute import make_strategy

    make_strategy("auto")


def _clean_bytes():
    frame = make_reviews(60)
    return {
        ".csv": frame.to_csv(index=False).encode(),
        ".tsv": frame.to_csv(index=False, sep="\t").encode(),
        ".jsonl": frame.to_json(orient="records", lines=True, force_ascii=False).encode(),
    }


DATA_JUNK = [
    b'"',
    b",",
    b"\t",
    b"\n",
    b"\r",
    b"\x00",
    b"\xff\xfe",
    b"\xe9",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b"\xef\xbb\xbf",
    "é".encode(),
    "😀".encode(),
    b"\xed\xa0\x80",
    b"NaN",
    b"null",
    b'"""',
]


def text_file_cases(count):
    """CSV, TSV and JSON Lines files with random insertions, deletions, flips and cuts."""
    rng = random.Random(SEED + 2)
    clean = _clean_bytes()
    cases = []
    for i in range(count):
        suffix = rng.choice(sorted(clean))
        data = bytearray(clean[suffix])
        ops = []
        for _ in range(rng.randint(1, 6)):
            if not data:
                break
            op = rng.choice(["insert", "insert", "delete", "flip", "cut"])
            at = rng.randrange(len(data))
            if op == "insert":
                data[at:at] = rng.choice(DATA_JUNK)
            elif op == "delete":
                del data[at : at + rng.randint(1, 40)]
            elif op == "flip":
                data[at] = rng.randrange(256)
            else:
                del data[at:]
            ops.append(op)
        cases.append(pytest.param(suffix, bytes(data), id=f"{suffix[1:]}-{i:03d}-{'+'.join(ops)}"))
    return cases


def parquet_cases(count):
    """Parquet files with a few random bytes overwritten (footer, pages, metadata)."""
    import io

    rng = random.Random(SEED + 3)
    buffer = io.BytesIO()
    make_reviews(60).to_parquet(buffer)
    clean = buffer.getvalue()
    cases = []
    for i in range(count):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cases.append(pytest.param(".parquet", bytes(data), id=f"parquet-{i:03d}"))
    return cases


def check_data_case(suffix, data, tmp_path, capsys):
    """Loads a data file; a refused one must be refused the same by `train`.

    Nothing is trained: a file that loads is only checked to give usable splits.

    Returns:
        "refused" or "loaded".
    """
    path = _write(tmp_path / f"data{suffix}", data)
    raw = tiny_config_dict(path, tmp_path)
    with time_limit():
        try:
            splits = load_splits(DataConfig(**raw["data"]))
        except DataError as e:
            error = e
        else:
            assert len(splits.labels) >= 2
            assert all(len(frame) for _, frame in splits.items())
            return "loaded"
    config = _write(tmp_path / "run.yaml", yaml.safe_dump(raw))
    status, out, err = run_cli(train.main, ["--config", config], capsys)
    assert_refused(status, err, expected=error)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "saved_models").exists()
    return "refused"


@pytest.mark.parametrize("suffix, data", text_file_cases(45) + parquet_cases(15))
def test_corrupted_data_file_loads_or_is_refused_in_one_line(
    suffix, data, tmp_path, capsys, tensorflow_started
):
    check_data_case(suffix, data, tmp_path, capsys)


def test_corrupted_data_cases_include_refusals(tmp_path):
    refused = 0
    for i, param in enumerate(text_file_cases(45) + parquet_cases(15)):
        suffix, data = param.values
        try:
            load_splits(DataConfig(path=str(_write(tmp_path / f"{i}{suffix}", data))))
        except DataError:
            refused += 1
    assert refused >= 30, f"only {refused} of 60 corrupted files were refused"
