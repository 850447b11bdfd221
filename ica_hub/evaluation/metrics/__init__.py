"""The ``evaluate`` metric modules ica_hub keeps in the repo, loaded by path.

``evaluate.load("<name>")`` fetches a metric script from the Hub, which this project cannot
reach at run time; each module here is a folder ``<name>/<name>.py`` that ``evaluate.load``
reads from disk instead (they ship as package data).

- ``response_loss``: token-weighted NLL, perplexity, mean per-example NLL;
- ``preference_accuracy``: fraction of pairs whose chosen response is more likely per token;
- ``score_auroc``: AUROC of a score against 0/1 labels.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).parent
METRIC_NAMES = ("response_loss", "preference_accuracy", "score_auroc")


def load_metric(name: str, **kwargs):
    """``evaluate.load`` of one of ``METRIC_NAMES`` from its folder; ``kwargs`` go to it."""
    import evaluate

    if name not in METRIC_NAMES:
        raise ValueError(f"No metric module {name!r} in ica_hub; the metrics are "
                         f"{', '.join(METRIC_NAMES)}")
    return evaluate.load(str(METRICS_DIR / name), **kwargs)
