"""The dataset card of a scored version: merged YAML, provenance, score summary, histogram.

Merging, never replacing: the card already in the repo (written by ``push_to_hub``, by a person,
or by an earlier version) keeps every YAML key it has. Only this config's entry in ``configs`` and
``dataset_info`` is set; ``default: true`` moves to this config when asked and is then removed
from every other entry, so exactly one config is the default. In the body, only the block between
the ``ica_hub`` markers is rewritten; text around it stays.
"""

from __future__ import annotations

import io
import logging
import math

from datasets import Dataset, DatasetInfo, Features, SplitDict, SplitInfo
from datasets.info import DatasetInfosDict
from huggingface_hub import DatasetCard, DatasetCardData

from ica_hub.columns import ICA_FLAG, ICA_SCORE, PROVENANCE_KEYS

logger = logging.getLogger(__name__)

BLOCK_BEGIN = "<!-- ica_hub:begin (generated; edits inside this block are overwritten) -->"
BLOCK_END = "<!-- ica_hub:end -->"
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def score_summary(dataset: Dataset) -> dict:
    """Row count, flagged rows (non-null ``ica_flag``) and quantiles of non-null ``ica_score``."""
    summary: dict = {"num_rows": dataset.num_rows, "num_flagged": None, "num_scored": 0,
                     "mean": None, "quantiles": {}}
    if ICA_FLAG in dataset.column_names:
        summary["num_flagged"] = sum(flag is not None for flag in dataset[ICA_FLAG])
    if ICA_SCORE in dataset.column_names:
        scores = sorted(float(s) for s in dataset[ICA_SCORE] if s is not None and not math.isnan(s))
        summary["num_scored"] = len(scores)
        if scores:
            summary["mean"] = sum(scores) / len(scores)
            summary["quantiles"] = {f"p{round(q * 100)}": _quantile(scores, q) for q in QUANTILES}
    return summary


def _quantile(sorted_values: list[float], q: float) -> float:
    # Linear interpolation between closest ranks (numpy's default method).
    position = q * (len(sorted_values) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def histogram_figure(dataset: Dataset, column: str, title: str):
    """A matplotlib ``Figure``: the histogram of score column ``column``, null and NaN left out
    (an empty plot with a note if nothing is scored); sqrt(count) bins, within 5..50."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    scores = []
    if column in dataset.column_names:
        scores = [float(s) for s in dataset[column] if s is not None and not math.isnan(s)]
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axes = figure.subplots()
    if scores:
        axes.hist(scores, bins=min(50, max(5, int(math.sqrt(len(scores))))), color="#4c72b0")
    else:
        axes.text(0.5, 0.5, f"no {column} values", ha="center", va="center")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))  # counts of examples
    axes.set_xlabel(f"{column} (per example)")
    axes.set_ylabel("examples")
    axes.set_title(title, fontsize=9)
    figure.tight_layout()
    return figure


def histogram_png(dataset: Dataset, title: str) -> bytes:
    """PNG bytes of the ``ica_score`` histogram, for the dataset card."""
    figure = histogram_figure(dataset, ICA_SCORE, title)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def merge_card_metadata(
    card_data: DatasetCardData, *, config_name: str, split: str, data_files: str,
    features: Features, num_rows: int, num_bytes: int, download_bytes: int,
    replaced_download_bytes: int, make_default: bool | None,
) -> None:
    """Set this config's ``configs`` and ``dataset_info`` entries in ``card_data``, in place.

    ``make_default=None`` makes this config the default only when no config is default yet.
    ``download_bytes`` is the size of this split's new parquet files, ``replaced_download_bytes``
    that of the files they replace; the config's ``download_size`` moves by the difference.
    """
    # configs: this config's entry, with this split's files; other splits and configs untouched
    configs = [dict(entry) for entry in (card_data.get("configs") or [])]
    entry = next((c for c in configs if c.get("config_name") == config_name), None)
    if entry is None:
        entry = {"config_name": config_name}
        configs.append(entry)
    split_files = [f for f in _data_files_list(entry.get("data_files")) if f["split"] != split]
    entry["data_files"] = split_files + [{"split": split, "path": data_files}]
    # datasets treats a config named "default" as a default whatever its flag says.
    named_default = any(c.get("config_name") == "default" for c in configs if c is not entry)
    if config_name == "default" and make_default is False:
        raise ValueError("config_name='default' is always the default config for datasets; "
                         "pass another config_name or make_default=None/True.")
    if config_name != "default" and make_default and named_default:
        raise ValueError(f"Cannot make {config_name!r} the default config: the repo has a config "
                         "named 'default', which datasets always treats as the default. Push "
                         "the default data under another name first, or use config 'default'.")
    has_default = named_default or any(c.get("default") for c in configs if c is not entry)
    if config_name == "default":
        make_default = True
    if make_default or (make_default is None and (not has_default or entry.get("default"))):
        for other in configs:
            other.pop("default", None)
        entry["default"] = True
    elif make_default is False:
        entry.pop("default", None)
    if not any(c.get("default") for c in configs):
        # say it explicitly: exactly one entry carries `default: true`
        for other in configs:
            if other["config_name"] == "default":
                other["default"] = True
    card_data["configs"] = configs

    # dataset_info: this config's features and this split's sizes, merged into what is there
    infos = DatasetInfosDict.from_dataset_card_data(card_data)
    info = infos.get(config_name) or DatasetInfo()
    splits = SplitDict()
    for name, split_info in (info.splits or {}).items():
        if name != split:
            splits[name] = split_info
    splits[split] = SplitInfo(name=split, num_bytes=num_bytes, num_examples=num_rows)
    download_size = max(0, (info.download_size or 0) - replaced_download_bytes) + download_bytes
    info = DatasetInfo(features=features, splits=splits, download_size=download_size,
                       dataset_size=sum(s.num_bytes or 0 for s in splits.values()))
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)


def _data_files_list(data_files) -> list[dict]:
    if data_files is None:
        return []
    if isinstance(data_files, str):
        return [{"split": "train", "path": data_files}]
    return [f if isinstance(f, dict) else {"split": "train", "path": f} for f in data_files]


def default_config(card_data: DatasetCardData) -> str | None:
    defaults = [c["config_name"] for c in card_data.get("configs") or [] if c.get("default")]
    return defaults[0] if len(defaults) == 1 else None


def split_sizes(card_data: DatasetCardData, config_name: str) -> dict[str, int]:
    info = DatasetInfosDict.from_dataset_card_data(card_data).get(config_name)
    if info is None or not info.splits:
        return {}
    return {name: s.num_examples for name, s in info.splits.items()}


def version_block(
    *, repo_id: str, tag: str, config_name: str, split: str, provenance: dict, summary: dict,
    histogram_path: str, card_data: DatasetCardData,
) -> str:
    """The generated part of the card body, in Markdown."""
    lines = [
        BLOCK_BEGIN,
        f"# Scored dataset `{repo_id}`",
        "",
        "Rows carry In-Context Approximation (ICA) scores as columns beside a stable "
        "`example_id`. Each push is an immutable version: a commit with a git tag. The file "
        "`versions.json` on the branch lists every version with its commit, sizes, content hash "
        "and provenance.",
        "",
        "## This version",
        "",
        f"- tag: `{tag}`",
        f"- config: `{config_name}`, split: `{split}`, rows: {summary['num_rows']}",
        "",
        "## Provenance",
        "",
        "| key | value |",
        "|---|---|",
        *[f"| {key} | {_cell(provenance.get(key))} |" for key in PROVENANCE_KEYS],
        "",
        "## Scores",
        "",
        f"- rows: {summary['num_rows']}; rows with an `ica_score`: {summary['num_scored']}",
        f"- flagged rows (non-null `ica_flag`): {_cell(summary['num_flagged'])}",
        f"- mean `ica_score`: {_number(summary['mean'])}",
    ]
    if summary["quantiles"]:
        names = list(summary["quantiles"])
        lines += ["", "| " + " | ".join(names) + " |", "|" + "---|" * len(names),
                  "| " + " | ".join(_number(v) for v in summary["quantiles"].values()) + " |"]
    lines += [
        "",
        f"![Histogram of ica_score]({histogram_path})",
        "",
        "## How to load this version",
        "",
        "```python",
        "from datasets import load_dataset",
        f'ds = load_dataset("{repo_id}", "{config_name}", split="{split}", revision="{tag}")',
        "",
        "from ica_hub.hub import load_scored  # same rows, through the version index",
        f'ds = load_scored("{repo_id}", version="{tag}", config_name="{config_name}", '
        f'split="{split}")',
        "```",
        "",
        "## Configs in this repo",
        "",
        "| config | default | splits (rows) |",
        "|---|---|---|",
    ]
    for entry in card_data.get("configs") or []:
        sizes = split_sizes(card_data, entry["config_name"])
        sizes_text = ", ".join(f"{name} ({rows})" for name, rows in sizes.items()) or "?"
        lines.append(f"| {entry['config_name']} | {'yes' if entry.get('default') else ''} | "
                     f"{sizes_text} |")
    lines += ["", BLOCK_END]
    return "\n".join(lines)


def _cell(value) -> str:
    return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")


def _number(value) -> str:
    return "" if value is None else f"{value:.4g}"


def replace_block(body: str, block: str) -> str:
    """Put ``block`` where the previous generated block was, or append it."""
    start, end = body.find(BLOCK_BEGIN), body.find(BLOCK_END)
    if start != -1 and end > start:
        return body[:start] + block + body[end + len(BLOCK_END):]
    return (body.rstrip() + "\n\n" + block + "\n").lstrip()


def build_card(existing_text: str | None, *, metadata: dict, block_kwargs: dict) -> DatasetCard:
    """Merge the new metadata and generated block into the existing card text (or a new card).

    ``metadata`` holds the keyword arguments of ``merge_card_metadata``; ``block_kwargs`` those
    of ``version_block`` except ``card_data``.
    """
    card = DatasetCard(existing_text or "---\nconfigs: []\n---\n")
    merge_card_metadata(card.data, **metadata)
    block = version_block(card_data=card.data, **block_kwargs)
    return DatasetCard(f"---\n{card.data.to_yaml()}\n---\n" + replace_block(card.text, block))
