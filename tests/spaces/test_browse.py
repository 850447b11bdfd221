"""ica_hub.hub.browse against a real local Hub: versions, sorted rows, summaries, results."""

from __future__ import annotations

import math
import socket
import statistics

import pytest
from huggingface_hub import HfApi

from ica_hub.hub import browse

from .conftest import POOL_ROWS


@pytest.fixture(scope="module")
def pool_rows(published):
    return browse.load_version(published.repo_id, published.pool.tag)


def test_versions_are_listed_newest_first_with_what_they_are(published):
    versions = browse.list_versions(published.repo_id)
    assert [v["tag"] for v in versions] == [published.pairs.tag, published.pool.tag]
    pairs, pool = versions
    assert (pool["config_name"], pool["split"], pool["num_rows"]) == ("pool", "train", 8)
    assert (pool["scorer"], pool["model"], pool["k"]) == ("ica-fit/v2",
                                                          "embedded/smollm2-135m-instruct", 3)
    assert pool["commit"] == published.pool.commit
    assert (pairs["scorer"], pairs["num_rows"]) == ("ica/v1", 2)
    assert browse.version_label(pool) == f"{published.pool.tag} (pool/train, 8 rows)"
    table = browse.versions_table(versions)
    assert table["tag"].tolist() == [published.pairs.tag, published.pool.tag]
    assert table["created_at"].tolist() == ["2026-12-04T10:00:00Z", "2026-12-03T10:00:00Z"]
    assert published.pool.commit[:12] in browse.version_markdown(pool)


def test_a_version_loads_by_tag_with_its_own_config(published, pool_rows):
    assert pool_rows["example_id"] == [row[0] for row in POOL_ROWS]
    pairs = browse.load_version(published.repo_id, published.pairs.tag)
    assert pairs.column_names == ["example_id", "prompt", "chosen", "rejected", "ica_score"]
    # Score columns are the float ones, the preferred first; a token count is not one.
    assert browse.score_columns(pool_rows) == ["fit_score", "ica_score"]
    assert browse.row_kinds(pool_rows) == ["corrupted", "off_domain", "swapped", "target",
                                           "truncated"]


def test_rows_are_sorted_by_the_chosen_score_nulls_last(pool_rows):
    table = browse.rows_table(pool_rows, "fit_score")
    assert table["example_id"].tolist() == ["p-3", "p-0", "p-6", "p-7", "p-1", "p-4", "p-2",
                                            "p-5"]
    assert table.columns.tolist() == ["example_id", "row_kind", "fit_score", "ica_flag",
                                      "prompt", "completion", "ica_score"]
    assert table["fit_score"].iloc[0] == 2.25 and math.isnan(table["fit_score"].iloc[-1])

    lowest = browse.rows_table(pool_rows, "ica_score", descending=False, max_rows=3)
    assert lowest["example_id"].tolist() == ["p-5", "p-4", "p-2"]
    assert lowest["ica_score"].tolist() == [-0.75, -0.5, 0.125]


def test_rows_are_filtered_by_kind_and_by_text(pool_rows):
    target = browse.rows_table(pool_rows, "fit_score", kind="target")
    assert target["example_id"].tolist() == ["p-3", "p-0", "p-6"]
    # Case ignored; the completion is searched as well as the prompt.
    sahara = browse.rows_table(pool_rows, "ica_score", text_contains="SAHARA")
    assert sahara["example_id"].tolist() == ["p-7", "p-2"]
    both = browse.rows_table(pool_rows, "ica_score", kind="off_domain", text_contains="sahara")
    assert both["example_id"].tolist() == ["p-7"]
    short = browse.rows_table(pool_rows, "fit_score", preview_chars=10)
    assert short["prompt"].iloc[1] == "How do I …"


def test_score_summaries_match_the_pushed_values(pool_rows):
    summaries = browse.score_summaries(pool_rows).set_index("score")
    fit = [row[4] for row in POOL_ROWS if row[4] is not None]
    assert summaries.loc["fit_score", ["rows", "scored", "null", "flagged"]].tolist() == [8, 7,
                                                                                         1, 2]
    assert summaries.loc["fit_score", "mean"] == round(statistics.mean(fit), 4)
    assert summaries.loc["fit_score", "p50"] == statistics.median(fit)
    assert (summaries.loc["fit_score", "p0"], summaries.loc["fit_score", "p100"]) == (-2.0, 2.25)
    assert summaries.loc["ica_score", "p100"] == 1.25


def test_the_histogram_counts_every_scored_row(pool_rows):
    figure = browse.score_histogram(pool_rows, "ica_score")
    axes = figure.axes[0]
    assert sum(patch.get_height() for patch in axes.patches) == 7
    assert axes.get_title() == "ica_score: 7 of 8 rows scored"


def test_results_tables_show_the_pushed_numbers(published):
    tables = browse.results_tables(published.repo_id, published.pool.tag)
    models = tables.models.set_index("model")
    assert models.loc["base", "test loss (nats/token)"] == 2.5
    assert models.loc["sft-ica", "perplexity"] == 8.375
    assert models.loc["base", "preference accuracy"] == 0.625
    assert math.isnan(models.loc["sft-ica", "preference accuracy"])
    scores = tables.scores.set_index("score")
    assert scores.loc["ica-fit", "AUROC clean>noisy"] == 0.9375
    assert scores.loc["ica-fit", "AUROC target>off-domain"] == 0.8125
    assert scores.loc["ica-fit", "clean / noisy rows"] == "4 / 3"
    assert scores.loc["ica (published)", "AUROC clean>noisy"] == 0.3125
    assert math.isnan(scores.loc["ica (published)", "AUROC target>off-domain"])  # NaN -> null
    assert set(tables.scores["results"]) == {"demo-eval"}
    assert f"evaluations/{published.pool.tag}/demo-eval.json" in tables.note

    none_yet = browse.results_tables(published.repo_id, published.pairs.tag)
    assert none_yet.models.empty and none_yet.scores.empty
    assert f"push.revision={published.pairs.tag}" in none_yet.note


def test_errors_name_the_repo_or_tag_and_the_fix(published):
    with pytest.raises(browse.BrowseError, match="'local/no-such-repo' was not found on "
                                                 + published.hub.endpoint):
        browse.list_versions("local/no-such-repo")
    HfApi().create_repo("local/browse-empty", repo_type="dataset", exist_ok=True)
    with pytest.raises(browse.BrowseError, match="local/browse-empty has no scored versions "
                                                 "yet.*push_scored"):
        browse.list_versions("local/browse-empty")
    with pytest.raises(browse.BrowseError, match=f"did you mean '{published.pool.tag}'"):
        browse.load_version(published.repo_id, published.pool.tag + "x")
    with pytest.raises(browse.BrowseError, match="'not a repo' is not a repo id.*namespace/name"):
        browse.list_versions("not a repo")
    with pytest.raises(browse.BrowseError, match="No dataset repo given"):
        browse.list_versions(" ")


def test_bad_columns_and_kinds_are_named(pool_rows):
    with pytest.raises(browse.BrowseError, match="sort_by='fit_scor'.*did you mean 'fit_score'"):
        browse.rows_table(pool_rows, "fit_scor")
    with pytest.raises(browse.BrowseError, match="sort_by='ica_num_response_tokens'"):
        browse.rows_table(pool_rows, "ica_num_response_tokens")
    with pytest.raises(browse.BrowseError, match="kind='noisy'.*'corrupted'"):
        browse.rows_table(pool_rows, "fit_score", kind="noisy")


def test_an_unreachable_hub_is_named_with_the_fix(published):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{sock.getsockname()[1]}"
        with pytest.raises(browse.BrowseError, match=f"Cannot reach the Hub at {endpoint}.*"
                                                     "ICA_HUB_ENDPOINT"):
            browse.list_versions(published.repo_id, endpoint=endpoint)
    # The clients point at the local Hub again afterwards.
    assert browse.list_versions(published.repo_id)[0]["tag"] == published.pairs.tag


def test_conversations_are_shown_and_searched_as_role_and_content():
    from datasets import Dataset

    chats = Dataset.from_dict({
        "example_id": ["c-0", "c-1"],
        "messages": [[{"role": "user", "content": "Sort a list?"},
                      {"role": "assistant", "content": "Use sorted()."}],
                     [{"role": "user", "content": "Capital of France?"},
                      {"role": "assistant", "content": "Paris."}]],
        "ica_demonstrations": [[0, 2], [1, 2]],  # a list column: neither a score nor text
        "ica_score": [0.5, 1.5],
    })
    table = browse.rows_table(chats, "ica_score")
    assert table.columns.tolist() == ["example_id", "ica_score", "messages"]
    assert table["messages"].tolist() == ["user: Capital of France? | assistant: Paris.",
                                          "user: Sort a list? | assistant: Use sorted()."]
    assert browse.rows_table(chats, "ica_score", text_contains="sorted(")["example_id"].tolist() \
        == ["c-0"]
