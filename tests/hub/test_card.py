"""Card merging without a server: YAML keys, splits and text that are not ours survive."""

from __future__ import annotations

from huggingface_hub import DatasetCard

from ica_hub.hub import card as card_lib

from .helpers import provenance, scored_rows

EXISTING = """---
license: apache-2.0
pretty_name: Someone's pool
configs:
- config_name: pool
  data_files:
  - split: train
    path: pool/train-*
  - split: test
    path: pool/test-*
  default: true
dataset_info:
  config_name: pool
  features:
  - name: text
    dtype: string
  splits:
  - name: train
    num_bytes: 100
    num_examples: 10
  - name: test
    num_bytes: 20
    num_examples: 2
  download_size: 500
  dataset_size: 120
---
# Someone's pool

Hand-written notes that must stay.
"""


def _merge(existing: str | None, config_name: str, split: str, make_default=None,
           replaced: int = 0) -> DatasetCard:
    rows = scored_rows(4)
    return card_lib.build_card(
        existing,
        metadata=dict(config_name=config_name, split=split, data_files=f"{config_name}/{split}-*",
                      features=rows.features, num_rows=4, num_bytes=64, download_bytes=300,
                      replaced_download_bytes=replaced, make_default=make_default),
        block_kwargs=dict(repo_id="local/pool", tag="t1", config_name=config_name, split=split,
                          provenance=provenance(), summary=card_lib.score_summary(rows),
                          histogram_path="images/x.png"),
    )


def test_merge_keeps_other_keys_configs_splits_and_text():
    merged = _merge(EXISTING, "pool", "train", replaced=400)
    data = merged.data.to_dict()
    assert data["license"] == "apache-2.0" and data["pretty_name"] == "Someone's pool"
    assert data["configs"] == [{
        "config_name": "pool", "default": True,
        "data_files": [{"split": "test", "path": "pool/test-*"},
                       {"split": "train", "path": "pool/train-*"}],
    }]
    assert card_lib.split_sizes(merged.data, "pool") == {"test": 2, "train": 4}
    assert data["dataset_info"]["download_size"] == 500 - 400 + 300
    assert "Hand-written notes that must stay." in merged.text
    again = _merge(str(merged), "pool", "train")
    assert again.text.count(card_lib.BLOCK_BEGIN) == 1
    assert "Hand-written notes that must stay." in again.text


def test_a_new_config_joins_without_taking_the_default_unless_asked():
    merged = _merge(EXISTING, "scored", "train")
    assert card_lib.default_config(merged.data) == "pool"
    assert set(card_lib.split_sizes(merged.data, "pool")) == {"train", "test"}
    promoted = _merge(str(merged), "scored", "train", make_default=True)
    assert card_lib.default_config(promoted.data) == "scored"
    assert sum(bool(c.get("default")) for c in promoted.data.to_dict()["configs"]) == 1


def test_a_new_card_gets_the_summary_and_the_load_snippet():
    merged = _merge(None, "default", "train")
    assert card_lib.default_config(merged.data) == "default"
    assert 'revision="t1"' in merged.text
    summary = card_lib.score_summary(scored_rows(4))
    # rows 0..3: scores -0.2, -0.1, 0.0, 0.1 (none unscored); row 0 and 3 flagged
    assert summary["num_flagged"] == 2 and summary["num_scored"] == 4
    assert abs(summary["quantiles"]["p50"] - (-0.05)) < 1e-9


def test_histogram_is_a_png():
    assert card_lib.histogram_png(scored_rows(6), "title").startswith(b"\x89PNG\r\n\x1a\n")
