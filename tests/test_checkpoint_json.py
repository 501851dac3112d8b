"""The JSON half of an export and of a fine-tuned checkpoint: one line naming the file and
the fix for every way it can be wrong."""
import pytest

from specaware import export
from specaware.export import CheckpointError
from specaware.finetune import checkpoint

READERS = {  # reader, path it is given, remedy its messages end with
    "export": (lambda p: export.read_meta(p.with_suffix(".json")), "specaware export"),
    "finetuned": (lambda p: checkpoint.read_meta(p.with_suffix(".safetensors")),
                  "re-run `specaware finetune`"),
}


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("text, defect", [(None, "not found|is missing"),
                                          ('{"format": ', "not valid JSON"),
                                          ("[1, 2]", "expected a JSON object, got list"),
                                          ('{"format": "other/1"}', "format 'other/1' is not")])
def test_a_bad_metadata_file_is_one_line_naming_it(tmp_path, kind, text, defect):
    read, remedy = READERS[kind]
    path = tmp_path / "model.safetensors"
    if text is not None:
        path.with_suffix(".json").write_text(text)
    with pytest.raises(CheckpointError, match=defect) as err:
        read(path)
    message = str(err.value)
    assert message.startswith(str(path.with_suffix(".json"))) and "\n" not in message
    if text is not None and "format" not in defect:
        expected = remedy if kind == "finetuned" else f"re-export with `{remedy}`"
        assert message.endswith(expected)


def test_each_reader_accepts_its_own_format_only(tmp_path):
    path = tmp_path / "model.json"
    path.write_text('{"format": "%s", "task": "segmentation"}' % checkpoint.FORMAT)
    assert checkpoint.read_meta(path)["task"] == "segmentation"
    with pytest.raises(CheckpointError, match="is not"):
        export.read_meta(path)
    path.write_text('{"format": "%s"}' % export.FORMAT)
    assert export.read_meta(path)["format"] == export.FORMAT
    with pytest.raises(CheckpointError, match="load_pretrained"):
        checkpoint.read_meta(path)
