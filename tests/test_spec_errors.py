"""Bad specs give one clear paragraph (file, key path, allowed values) and exit code 2."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from strcvit_bench.cli import app
from strcvit_bench.errors import SpecError
from strcvit_bench.streams.spec import load_spec, parse_spec

from .conftest import write_spec

runner = CliRunner()


def _error(data) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(data, "my.yaml")
    return str(info.value)


def test_unknown_key_names_file_path_and_allowed_keys(tiny_spec_data):
    tiny_spec_data["tasks"][1]["metrik"] = "anls"
    msg = _error(tiny_spec_data)
    assert "my.yaml" in msg and "tasks[1].metrik: unknown key" in msg
    assert "allowed keys: name, family, source, instructions, metric, test_size" in msg


def test_unknown_key_inside_a_source_lists_that_kinds_keys(tiny_spec_data):
    tiny_spec_data["tasks"][0]["source"]["size"] = 64
    msg = _error(tiny_spec_data)
    assert "tasks[0].source.size: unknown key" in msg
    assert "image_size" in msg and "generator" in msg


def test_wrong_metric_lists_the_metrics(tiny_spec_data):
    tiny_spec_data["tasks"][0]["metric"] = "bleu"
    msg = _error(tiny_spec_data)
    assert "tasks[0].metric" in msg and "'anls'" in msg and "'bleu'" in msg


def test_wrong_type(tiny_spec_data):
    tiny_spec_data["chunk_size"] = "many"
    assert "chunk_size" in _error(tiny_spec_data)


def test_unknown_generator_and_source_kind(tiny_spec_data):
    tiny_spec_data["tasks"][0]["source"]["generator"] = "mazes"
    assert "'scenes'" in _error(tiny_spec_data)
    tiny_spec_data["tasks"][0]["source"] = {"kind": "ftp"}
    assert "'builtin', 'hf', 'local'" in _error(tiny_spec_data)


def test_schedule_with_unknown_task(tiny_spec_data):
    tiny_spec_data["schedule"]["tasks"]["ghost"] = {"start": 0}
    assert "unknown task(s) ghost" in _error(tiny_spec_data)


def test_template_with_unknown_placeholder(tiny_spec_data):
    tiny_spec_data["tasks"][0]["instructions"] = ["{questoin}"]
    assert "unknown placeholder" in _error(tiny_spec_data)


def test_table_length_must_match(tiny_spec_data):
    tiny_spec_data["schedule"] = {"table": [{"shapes": 1}]}
    assert "has 1 rows but num_chunks is 3" in _error(tiny_spec_data)


def test_yaml_syntax_error_names_line(tmp_path: Path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntasks: [\n")
    with pytest.raises(SpecError, match=r"bad.yaml: not valid YAML at line"):
        load_spec(p)


def test_cli_bad_spec_exit_2_no_traceback_nothing_written(tmp_path, tiny_spec_data):
    tiny_spec_data["tasks"][0]["metric"] = "accuracy"
    spec = write_spec(tmp_path / "s.yaml", tiny_spec_data)
    out = tmp_path / "out"
    result = runner.invoke(app, ["build-stream", str(spec), "--out", str(out)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "tasks[0].metric" in result.output and "s.yaml" in result.output
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_cli_missing_spec_file(tmp_path):
    result = runner.invoke(app, ["build-stream", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2 and "cannot read the spec file" in result.output


@pytest.mark.parametrize("template", ["{question!r}", "{question:x<10}", "{question:>5000000000}"])
def test_templates_take_plain_placeholders_only(tiny_spec_data, template):
    tiny_spec_data["tasks"][0]["instructions"] = [template]
    msg = _error(tiny_spec_data)
    assert "tasks[0].instructions" in msg and "no format spec or conversion" in msg


@pytest.mark.parametrize("name", [".", "..", "..."])
def test_stream_names_that_are_not_a_path_component_are_refused(tiny_spec_data, name):
    tiny_spec_data["name"] = name
    assert "name" in _error(tiny_spec_data)
    tiny_spec_data["name"] = "v1.2"
    parse_spec(tiny_spec_data, "my.yaml")
