"""Reading local rows: every bad path or file is named with its recipe option and the fix."""

from __future__ import annotations

import pytest
from datasets import Dataset, DatasetDict

from ica_hub.data.loading import read_local


def test_a_jsonl_file_and_a_datasetdict_split_are_read(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "c", "completion": "d"}\n')
    assert read_local(str(path), "train", "data.pool")["prompt"] == ["a", "c"]
    DatasetDict(test=Dataset.from_dict({"x": [1, 2, 3]})).save_to_disk(str(tmp_path / "dd"))
    assert read_local(str(tmp_path / "dd"), "test", "data.pool")["x"] == [1, 2, 3]


def test_a_malformed_jsonl_line_is_named_by_its_row(tmp_path):
    path = tmp_path / "holdout.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\nnot json\n')
    with pytest.raises(ValueError) as error:
        read_local(str(path), "train", "data.holdout")
    message = str(error.value)
    assert message.startswith(f"data.holdout = '{path}'") and "row 1" in message
    assert "fix that row" in message


def test_a_missing_split_names_the_splits_and_the_split_option(tmp_path):
    DatasetDict(train=Dataset.from_dict({"x": [1]})).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"holds the splits \['train'\], not 'validation'.*"
                                         r"data.holdout_split=train"):
        read_local(str(tmp_path / "dd"), "validation", "data.holdout", "data.holdout_split")


@pytest.mark.parametrize("name", ["rows.csv", "rows"])
def test_a_file_of_another_kind_says_which_kinds_are_read(tmp_path, name):
    (tmp_path / name).write_text("prompt,completion\na,b\n")
    with pytest.raises(ValueError, match=r"data.pool = .* is not read here; give a .json, .jsonl"):
        read_local(str(tmp_path / name), "train", "data.pool")


def test_a_folder_not_written_by_save_to_disk_says_so(tmp_path):
    (tmp_path / "rows").mkdir()
    (tmp_path / "rows" / "a.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    with pytest.raises(ValueError, match="not written by save_to_disk"):
        read_local(str(tmp_path / "rows"), "train", "data.train")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data.pool = .*: no such file"):
        read_local(str(tmp_path / "missing.jsonl"), "train", "data.pool")
    (tmp_path / "empty.jsonl").write_text("")
    with pytest.raises(ValueError, match="no rows could be read"):
        read_local(str(tmp_path / "empty.jsonl"), "train", "data.pool")
