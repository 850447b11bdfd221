"""The ICA browser Space: scored versions of a dataset repo and their evaluation results.

    ICA_HUB_ENDPOINT=http://127.0.0.1:8765 ICA_HUB_REPO=local/ica-demo \
        python spaces/ica_browser/app.py

Environment: ``ICA_HUB_REPO`` (the repo shown first; default ``local/ica-demo``, the demo's),
``ICA_HUB_VERSION`` (the tag selected first; default the newest), ``ICA_HUB_ENDPOINT`` (a Hub
other than the configured one, e.g. the local Hub of ``ica-hub hub serve``), ``ICA_HUB_TOKEN`` (a token that reads the repo; optional for a public
one), ``GRADIO_SERVER_PORT`` (default 7860). Every number shown comes from
``ica_hub.hub.browse``; this file only lays the page out and wires events to it.
"""

from __future__ import annotations

import functools
import os

import gradio as gr

from ica_hub.hub import browse
from ica_hub.hub.local import use_hub

DEFAULT_REPO = "local/ica-demo"
ALL_KINDS = ("all kinds", "")
ORDERS = ("highest first", "lowest first")


def shown_in_page(handler):
    """Show a ``BrowseError`` (no such repo, tag, column) in the page instead of a traceback."""
    @functools.wraps(handler)
    def wrapped(*args):
        try:
            return handler(*args)
        except browse.BrowseError as error:
            raise gr.Error(str(error), title="Cannot show this") from error
    return wrapped


def build_app(default_repo: str, token: str | None, default_tag: str | None = None) -> gr.Blocks:
    """The page: a repo box and a version drop-down above a Scores tab and an Evaluation tab.
    The drop-down opens on ``default_tag`` when the repo has it, else on the newest version."""
    read = dict(token=token)

    @shown_in_page
    def show_versions(repo_id):
        versions = browse.list_versions(repo_id.strip(), **read)
        choices = [(browse.version_label(v), v["tag"]) for v in versions]
        tags = [tag for _, tag in choices]
        selected = default_tag if default_tag in tags else tags[0]
        if default_tag and default_tag not in tags:
            gr.Warning(f"{repo_id} has no version {default_tag!r} (ICA_HUB_VERSION): showing "
                       "the newest one.")
        return gr.Dropdown(choices=choices, value=selected), browse.versions_table(versions)

    @shown_in_page
    def show_version(repo_id, tag):
        if not tag:
            return (gr.skip(),) * 11
        repo_id = repo_id.strip()
        version = browse.find_version(repo_id, tag, **read)
        dataset = browse.load_version(repo_id, tag, **read)
        columns, kinds = browse.score_columns(dataset), browse.row_kinds(dataset)
        column = columns[0] if columns else None
        tables = browse.results_tables(repo_id, tag, **read)
        return (browse.version_markdown(version),
                gr.Dropdown(choices=columns, value=column),
                gr.Dropdown(choices=[ALL_KINDS, *kinds], value="", visible=bool(kinds)),
                ORDERS[0], "",  # the rows below are unfiltered, highest first
                browse.score_summaries(dataset),
                browse.score_histogram(dataset, column) if column else None,
                browse.rows_table(dataset, column) if column else None,
                tables.note, tables.models, tables.scores)

    @shown_in_page
    def show_rows(repo_id, tag, column, order, kind, text):
        if not (tag and column):
            return gr.skip(), gr.skip()
        dataset = browse.load_version(repo_id.strip(), tag, **read)
        table = browse.rows_table(dataset, column, descending=order == ORDERS[0], kind=kind,
                                  text_contains=text)
        return browse.score_histogram(dataset, column), table

    with gr.Blocks(title="ICA browser") as app:
        gr.Markdown("# ICA browser\nScored versions of a dataset repo (In-Context "
                    "Approximation scores) and the evaluation results filed under each.")
        with gr.Row(equal_height=True):
            repo = gr.Textbox(value=default_repo, label="Dataset repo", scale=2,
                              info="namespace/name; press Enter to list its versions")
            version = gr.Dropdown(label="Scored version", choices=[], scale=3,
                                  info="newest first")
        with gr.Accordion("All versions of this repo", open=False):
            versions = gr.Dataframe(label="Versions", interactive=False)
        details = gr.Markdown()
        with gr.Tab("Scores"):
            with gr.Row():
                column = gr.Dropdown(label="Sort by score column", choices=[])
                order = gr.Radio(list(ORDERS), value=ORDERS[0], label="Order")
                kind = gr.Dropdown(label="Row kind", choices=[ALL_KINDS], value="")
                text = gr.Textbox(label="Text contains", info="press Enter to filter")
            summary = gr.Dataframe(label="Summary per score column", interactive=False)
            histogram = gr.Plot(label="Histogram", format="png")
            rows = gr.Dataframe(label="Rows, sorted by the score column (first 200)",
                                interactive=False, wrap=True, max_height=600)
        with gr.Tab("Evaluation"):
            note = gr.Markdown()
            models = gr.Dataframe(label="Models: held-out test loss, perplexity, preference "
                                        "accuracy", interactive=False)
            scores = gr.Dataframe(label="Scores: AUROC of clean over noisy rows and of target "
                                        "over off-domain rows", interactive=False)

        gr.on([app.load, repo.submit], show_versions, inputs=repo, outputs=[version, versions])
        version.change(show_version, inputs=[repo, version],
                       outputs=[details, column, kind, order, text, summary, histogram, rows,
                                note, models, scores])
        view = [repo, version, column, order, kind, text]
        gr.on([column.input, order.input, kind.input, text.submit], show_rows, inputs=view,
              outputs=[histogram, rows])
    return app


def main() -> None:
    token = os.environ.get("ICA_HUB_TOKEN") or None
    endpoint = os.environ.get("ICA_HUB_ENDPOINT")
    if endpoint:
        use_hub(endpoint, token)
    build_app(os.environ.get("ICA_HUB_REPO", DEFAULT_REPO), token,
              os.environ.get("ICA_HUB_VERSION") or None).launch()


if __name__ == "__main__":
    main()
