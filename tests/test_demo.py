"""The demo's data and options: what `make demo` depends on, checked without the model."""

import collections

import pytest

from ica_hub.cli import build_parser, main
from ica_hub.data.demo_data import DemoDataConfig, build_demo_data


def _demo_args(*extra):
    return build_parser().parse_args(["demo", *extra])


def test_the_demo_defaults_build_real_data():
    from dataclasses import replace

    from ica_hub.demo import check_args

    args = _demo_args()
    check_args(args)
    config = replace(DemoDataConfig(), num_pool=args.pool_size, num_holdout=args.holdout_size,
                     max_answer_chars=args.max_answer_chars, num_test=0, num_pairs=0,
                     num_pairs_test=0)
    data = build_demo_data(config)
    assert len(data["pool"]) == args.pool_size and len(data["holdout"]) == args.holdout_size
    kinds = collections.Counter(data["pool"]["row_kind"])
    assert set(kinds) == {"target", "off_domain", "swapped", "truncated", "corrupted"}


def test_demo_data_is_deterministic_and_splits_do_not_overlap():
    first, second = build_demo_data(), build_demo_data()
    assert first["pool"]["example_id"] == second["pool"]["example_id"]
    prompts = {name: set(split["prompt"]) for name, split in first.items()}
    assert not prompts["test"] & (prompts["pool"] | prompts["holdout"])
    assert not prompts["holdout"] & prompts["pool"]


def test_bad_demo_options_are_listed_at_once_without_a_traceback(capsys):
    code = main(["demo", "--pool-size", "0", "--k", "0", "--holdout-size", "0"])
    message = capsys.readouterr().err
    assert code == 2
    assert "--pool-size 0" in message and "--k 0" in message and "Traceback" not in message


@pytest.mark.parametrize("size", [10_000])
def test_too_large_demo_names_the_knobs(size):
    with pytest.raises(ValueError, match="max-answer-chars"):
        build_demo_data(DemoDataConfig(num_pool=size))
