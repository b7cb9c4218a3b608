import re
import subprocess
import sys
from typing import Optional

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from kerasbert import config_reference
from kerasbert.config import Config
from kerasbert.config_loading import config_from_dict
from tests.support.tiny import REPO

REFERENCE = REPO / "docs" / "configuration.md"
ROW = re.compile(
    r"^\| `(?P<key>[^`]+)` \| `(?P<type>(?:[^`])+)` \| (?P<default>.+?) \| (?P<description>.+) \|$"
)


def documented_rows() -> dict:
    """The committed reference's table rows, by dotted key."""
    rows = {}
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            assert match["key"] not in rows, f"{match['key']} is documented twice"
            rows[match["key"]] = match.groupdict()
    return rows


def schema_keys(schema=None, node=None, prefix="") -> dict:
    """Every dotted key of the config, from pydantic's JSON schema: not the reference's own walk."""
    if schema is None:
        schema = node = Config.model_json_schema()
    node = _resolve(schema, node)
    keys = {}
    for name, prop in node.get("properties", {}).items():
        key = f"{prefix}.{name}" if prefix else name
        keys[key] = {**prop, "required": name in node.get("required", ())}
        if "$ref" in prop and "description" not in prop:
            # pydantic leaves out a section field's description when it is the section's own.
            keys[key]["description"] = _resolve(schema, prop).get("description")
        for member in prop.get("anyOf", [prop]):
            if "items" in member:
                keys.update(schema_keys(schema, member["items"], f"{key}[]"))
            elif "$ref" in member:
                keys.update(schema_keys(schema, member, key))
    return keys


def _resolve(schema, node):
    if "$ref" in node:
        return schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_committed_reference_is_current():
    committed = REFERENCE.read_text(encoding="utf-8")
    assert committed == config_reference.render_reference(), (
        f"docs/configuration.md is out of date with kerasbert/config.py; regenerate it with: "
        f"{config_reference.COMMAND}"
    )


def test_every_key_of_every_section_is_documented_with_a_description():
    keys = schema_keys()
    assert "training.early_stopping.patience" in keys  # the walk reaches nested sections
    assert "training.unfreezing[].trainable_layers" in keys  # and list items
    undescribed = sorted(key for key, prop in keys.items() if not prop.get("description"))
    assert not undescribed, f"write a docstring under these fields: {undescribed}"
    assert sorted(documented_rows()) == sorted(keys)


def test_documented_defaults_are_the_schemas_defaults():
    rows = documented_rows()
    for key, prop in schema_keys().items():
        default = rows[key]["default"]
        if prop["required"]:
            assert default == "required", key
        elif isinstance(prop.get("default"), dict):  # a section that is on unless set to null
            nullable = any(member.get("type") == "null" for member in prop.get("anyOf", []))
            assert default.startswith("on,") == nullable, key
            assert f"`{key}`" in default, key
        else:
            assert default.startswith("`") and default.endswith("`"), key
            assert yaml.safe_load(default.strip("`")) == prop["default"], key


def test_defaults_a_new_user_asks_about_are_those_a_minimal_config_gets(tmp_path):
    config = config_from_dict(
        {"name": "run", "data": {"train": "train.csv"}, "model": {"scratch": {}}}
    )
    rows = documented_rows()
    early_stopping = config.training.early_stopping
    assert early_stopping is not None
    assert rows["training.early_stopping"]["default"].startswith("on,")
    assert rows["training.early_stopping.patience"]["default"] == f"`{early_stopping.patience}`"
    assert rows["training.early_stopping.monitor"]["default"] == f"`{early_stopping.monitor}`"
    assert rows["export.enabled"]["default"] == "`true`" and config.export.enabled
    assert rows["model.scratch.lowercase"]["default"] == "`true`" and config.model.scratch.lowercase
    assert rows["data.format"]["default"] == f"`{config.data.format}`"
    assert rows["data.split.validation"]["default"] == f"`{config.data.split.validation}`"
    assert config.data.test is None and config.data.validation is None


def test_types_are_read_from_the_constraints():
    rows = documented_rows()
    assert rows["training.epochs"]["type"] == "int > 0"
    assert rows["data.split.validation"]["type"] == "float in [0, 1)"
    assert rows["training.layerwise_decay"]["type"] == "float in (0, 1]"
    assert rows["data.format"]["type"] == r'"auto" \| "csv" \| "tsv" \| "jsonl" \| "parquet"'
    assert rows["training.unfreezing"]["type"] == r"list of stage \| null"
    assert rows["training.unfreezing[].trainable_layers"]["type"] == r'int >= 0 \| "all"'
    assert rows["seed"]["type"] == "int in [0, 2**32)"


class _Undescribed(BaseModel):
    """A section whose field has no docstring."""

    model_config = ConfigDict(use_attribute_docstrings=True)

    described: int = 1
    """Described."""
    patience: Optional[int] = 2


def test_a_field_without_a_description_stops_the_reference():
    with pytest.raises(ValueError, match=r"`patience` has no description; write a docstring"):
        config_reference.render_reference(_Undescribed)


def test_check_fails_on_a_stale_file_and_names_the_command(tmp_path, capsys):
    stale = tmp_path / "configuration.md"
    stale.write_text(REFERENCE.read_text(encoding="utf-8").replace("`2`", "`3`"), encoding="utf-8")
    assert config_reference.main(["--check", str(stale)]) == 1
    assert config_reference.COMMAND in capsys.readouterr().err
    fresh = tmp_path / "fresh.md"
    assert config_reference.main(["--output", str(fresh)]) == 0
    assert config_reference.main(["--check", str(fresh)]) == 0


def test_generating_the_reference_loads_no_tensorflow():
    code = (
        "import sys, kerasbert.config_reference as r; r.render_reference(); "
        "print([m for m in ('tensorflow', 'keras', 'keras_hub') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
