import pytest

from kerasbert.config import ConfigError
from kerasbert.config_loading import config_from_dict, load_config
from tests.support.tiny import REPO, tiny_config_dict


def write_yaml(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_quickstart_config_is_valid():
    config = load_config(REPO / "configs" / "quickstart.yaml")
    assert config.name == "quickstart"
    assert config.model.scratch.family == "bert"


def test_overrides_parse_values_as_yaml(tmp_path):
    config = load_config(
        REPO / "configs" / "quickstart.yaml",
        ["training.batch_size=4", "model.dropout=0.25", "export.model_name=other"],
    )
    assert config.training.batch_size == 4
    assert config.model.dropout == 0.25
    assert config.model_name == "other"


def test_unknown_key_suggests_the_nearest(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["training"]["lerning_rate"] = 0.1
    with pytest.raises(
        ConfigError, match=r"training\.lerning_rate: unknown key; did you mean `learning_rate`\?"
    ):
        config_from_dict(raw, source="run.yaml")


def test_wrong_type_names_key_and_value(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["training"]["epochs"] = "many"
    with pytest.raises(ConfigError, match=r"^run\.yaml: training\.epochs: .*received 'many'"):
        config_from_dict(raw, source="run.yaml")


def test_out_of_range_value_is_refused(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["model"]["dropout"] = 1.5
    with pytest.raises(
        ConfigError, match=r"model\.dropout: Input should be less than 1; received 1\.5"
    ):
        config_from_dict(raw)


def test_missing_required_key(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    del raw["name"]
    with pytest.raises(ConfigError, match=r"name: required key is missing"):
        config_from_dict(raw)


def test_data_needs_exactly_one_source(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["data"]["train"] = "y.csv"
    with pytest.raises(ConfigError, match=r"data: give either `path`"):
        config_from_dict(raw)


def test_sequence_length_beyond_backbone_is_refused(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["model"]["sequence_length"] = 64
    with pytest.raises(ConfigError, match=r"exceeds scratch\.max_sequence_length"):
        config_from_dict(raw)


def test_bad_yaml_is_one_line(tmp_path):
    path = write_yaml(tmp_path, "name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"not valid YAML at line"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match=r"expected a mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"no such config file"):
        load_config(tmp_path / "nope.yaml")


def test_override_without_equals_is_refused():
    with pytest.raises(ConfigError, match=r"--set expects key.path=value"):
        load_config(REPO / "configs" / "quickstart.yaml", ["training.epochs"])


def test_roberta_vocabulary_too_small_for_bpe(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path, family="roberta")
    raw["model"]["scratch"]["vocabulary_size"] = 100
    with pytest.raises(ConfigError, match=r"vocabulary_size must be at least 300 for roberta"):
        config_from_dict(raw)


@pytest.mark.parametrize(
    "training, message",
    [
        (
            {
                "schedule": {
                    "mode": "triangular",
                    "initial_learning_rate": 1e-3,
                    "maximal_learning_rate": 1e-4,
                    "step_size": 10,
                }
            },
            r"training\.schedule: Invalid value for argument `maximal_learning_rate`\. Expected a value "
            r">= initial_learning_rate=0\.001",
        ),
        (
            {
                "schedule": {
                    "mode": "triangular",
                    "initial_learning_rate": 1e-4,
                    "maximal_learning_rate": 1e-3,
                    "step_size": 0,
                }
            },
            r"training\.schedule\.step_size: Input should be greater than 0; received 0",
        ),
        (
            {"schedule": {"mode": "one_cycle"}},
            r"training\.schedule: mode 'one_cycle' needs `maximal_learning_rate`",
        ),
        (
            {
                "epochs": 3,
                "unfreezing": [
                    {"epochs": 1, "trainable_layers": 0},
                    {"epochs": 1, "trainable_layers": "all"},
                ],
            },
            r"training: unfreezing stages sum to 2 epochs but epochs is 3",
        ),
        (
            {
                "epochs": 2,
                "unfreezing": [
                    {"epochs": 1, "trainable_layers": 0},
                    {"epochs": 1, "trainable_layers": 5},
                ],
            },
            r"training\.unfreezing\[1\]\.trainable_layers is 5 but the backbone has 2 layers",
        ),
        (
            {"epochs": 1, "unfreezing": [{"epochs": 1, "trainable_layers": "most"}]},
            r"training\.unfreezing\[0\]\.trainable_layers: .*received 'most'",
        ),
        (
            {
                "epochs": 1,
                "unfreezing": [{"epochs": 1, "trainable_layers": 0, "maximal_learning_rate": 1e-3}],
            },
            r"training: unfreezing\[0\]\.maximal_learning_rate needs a cyclical or one_cycle schedule",
        ),
        (
            {
                "epochs": 1,
                "schedule": {
                    "mode": "one_cycle",
                    "maximal_learning_rate": 1e-3,
                    "restart_each_stage": False,
                },
                "unfreezing": [{"epochs": 1, "trainable_layers": 0, "maximal_learning_rate": 1e-2}],
            },
            r"needs .* restart_each_stage: true; received mode 'one_cycle', restart_each_stage False",
        ),
        (
            {
                "epochs": 1,
                "schedule": {
                    "mode": "triangular",
                    "initial_learning_rate": 1e-4,
                    "maximal_learning_rate": 1e-3,
                    "step_size": 10,
                },
                "unfreezing": [{"epochs": 1, "trainable_layers": 0, "maximal_learning_rate": 1e-5}],
            },
            r"training: unfreezing\[0\]\.maximal_learning_rate \(1e-05\) is below schedule\.initial_learning_rate",
        ),
        (
            {"gradient_accumulation_steps": 0},
            r"training\.gradient_accumulation_steps: Input should be greater than 0; received 0",
        ),
        (
            {"bucket_window": -1},
            r"training\.bucket_window: Input should be greater than or equal to 0; received -1",
        ),
    ],
)
def test_bad_schedules_are_refused_at_validation(tmp_path, training, message):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["training"].update(training)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_unknown_key_with_a_dash_is_named_as_written(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    raw["training"]["learning-rate"] = 0.1
    with pytest.raises(
        ConfigError, match=r"training\.learning-rate: unknown key; did you mean `learning_rate`\?"
    ):
        config_from_dict(raw)


@pytest.mark.parametrize(
    "runtime, message",
    [
        ({"intra_op_threads": 0}, r"runtime\.intra_op_threads: .*received 0"),
        (
            {"intra_op_threads": 100000},
            r"runtime\.intra_op_threads: .*less than or equal to 1024.*received 100000",
        ),
        ({"inter_op_threads": "many"}, r"runtime\.inter_op_threads: .*received 'many'"),
        (
            {"mixed_precision": "mixed_float16"},
            r"runtime\.mixed_precision: .*'float32' or 'mixed_bfloat16'.*received 'mixed_float16'",
        ),
        ({"jit_compile": "sometimes"}, r"runtime\.jit_compile: .*received 'sometimes'"),
        ({"threads": 2}, r"runtime\.threads: unknown key"),
    ],
)
def test_bad_runtime_settings_are_refused(tmp_path, runtime, message):
    raw = tiny_config_dict("x.csv", tmp_path, runtime=runtime)
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_runtime_and_new_training_keys_default_to_automatic_choices(tmp_path):
    raw = tiny_config_dict("x.csv", tmp_path)
    del raw["runtime"]  # the tests' own setting
    config = config_from_dict(raw)
    runtime = config.runtime
    assert (
        runtime.intra_op_threads,
        runtime.inter_op_threads,
        runtime.jit_compile,
        runtime.mixed_precision,
    ) == (
        "auto",
        "auto",
        "auto",
        "auto",
    )
    assert (config.training.gradient_accumulation_steps, config.training.bucket_window) == (1, 50)
    assert config.model.pooling == "cls"


def test_the_readme_override_example_is_a_valid_config():
    """The README's `--set` example, exactly as printed there, loads."""
    import shlex

    from tests.support.tiny import REPO

    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index(".venv/bin/python -m kerasbert.train --config configs/quickstart.yaml --set")
    command = text[start : text.index("```", start)].replace("\\\n", " ")
    argv = shlex.split(command)[3:]
    assert argv[:2] == ["--config", "configs/quickstart.yaml"]
    overrides = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    assert len(overrides) == 4
    config = load_config(REPO / argv[1], overrides)
    assert config.training.epochs == 2 and config.model.dropout == 0.2
    assert [stage.epochs for stage in config.training.unfreezing] == [1, 1]
    # Not the next version of the quickstart, which a server may be serving.
    assert config.model_name != load_config(REPO / argv[1]).model_name
