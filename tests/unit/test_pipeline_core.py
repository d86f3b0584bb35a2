"""The pipeline's pure core: the generated data, the feature definitions, AUC and the promotion
decision, and the train job's params."""

from __future__ import annotations

import doctest
import random

import numpy as np
import pytest

import sluice.functions.evaluation
import sluice.functions.features
import sluice.functions.transactions
from sluice.errors import SpecError
from sluice.functions.etl import clean
from sluice.functions.evaluation import auc, decide
from sluice.functions.features import FEATURES, enrich, features, update
from sluice.functions.train import TrainParams
from sluice.functions.transactions import InvalidTransaction, Txn, generate, raw_lines


@pytest.mark.parametrize("module", [sluice.functions.transactions, sluice.functions.features,
                                    sluice.functions.evaluation])
def test_doctests(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_the_generator_is_deterministic_ordered_and_has_fraud_at_the_asked_rate():
    days = list(generate(events=20_000, days=4, seed=3, fraud_rate=0.02))
    assert days == list(generate(events=20_000, days=4, seed=3, fraud_rate=0.02))
    assert days != list(generate(events=20_000, days=4, seed=4, fraud_rate=0.02))
    flat = [txn for day in days for txn in day]
    assert len(flat) == 20_000 and len({txn.id for txn in flat}) == 20_000
    assert all(a.seq < b.seq for a, b in zip(flat, flat[1:], strict=False))
    assert all(a.ts <= b.ts for a, b in zip(flat, flat[1:], strict=False))
    assert sum(txn.fraud for txn in flat) / len(flat) == pytest.approx(0.02, abs=0.002)


def test_wire_form_round_trips():
    txn = next(generate(events=100, days=1, seed=1))[5]
    assert Txn.from_json(txn.to_json()) == txn


@pytest.mark.parametrize("change, message", [
    ({"amount": -3.0}, "field 'amount' must be a number above 0, got -3.0"),
    ({"amount": "12"}, "field 'amount' must be a number above 0, got '12'"),
    ({"amount": float("nan")}, "field 'amount' must be a number above 0"),
    ({"card": ""}, "field 'card' must be a non-empty string"),
    ({"seq": 1.5}, "field 'seq' must be a whole number"),
    ({"ts": "2026-01-01 nonsense"}, "field 'ts' is not an ISO 8601 time"),
    ({"ts": "2026-01-01T10:00:00"}, "field 'ts' has no time zone"),
    ({"fraud": True}, "field 'fraud' must be 0 or 1"),
])
def test_a_malformed_transaction_names_its_field(change, message):
    raw = next(generate(events=10, days=1, seed=1))[0].to_json() | change
    with pytest.raises(InvalidTransaction, match="^" + message.replace("(", r"\(")):
        Txn.from_json(raw)


def test_a_record_missing_fields_lists_them():
    with pytest.raises(InvalidTransaction, match="missing field\\(s\\): amount, country"):
        Txn.from_json({"id": "t", "seq": 1, "card": "c", "ts": "2026-01-01T00:00:00Z",
                       "merchant": "m", "category": "x"})


def test_raw_files_carry_the_bad_lines_they_report():
    batch = next(generate(events=5_000, days=1, seed=2))
    data, bad = raw_lines(batch, seed=9, bad_rate=0.02)
    failed, ids = 0, []
    for line in data.splitlines():
        try:
            ids.append(clean(line).id)
        except InvalidTransaction:
            failed += 1
    repeats = len(ids) - len(set(ids))
    assert bad > 50 and failed > 0 and repeats > 0
    assert failed + repeats == bad  # every bad line is malformed or a repeat
    assert len(set(ids)) == len(batch) - failed  # and nothing else went missing


def txn(seq: int, ts: float, amount: float = 10.0, country: str = "US", card: str = "c1",
        category: str = "grocery") -> Txn:
    return Txn(f"t{seq}", seq, card, ts, amount, "m", category, country)


def test_features_use_only_the_history_before_the_event():
    state = update(None, txn(1, 50_000.0, 10.0))
    state = update(state, txn(2, 50_000.0 + 3600.0, 30.0))
    later = txn(3, 50_000.0 + 7200.0, 400.0, "FR")
    vector = dict(zip(FEATURES, features(state, later), strict=True))
    assert vector["log_count"] == pytest.approx(np.log1p(2))
    assert vector["amount_vs_card"] == pytest.approx(np.log1p(400.0) - np.log1p(20.0))
    assert vector["log_gap"] == pytest.approx(np.log1p(3600.0))
    # the decayed rate: the first an hour before the second (half), both an hour before now
    assert vector["rate_1h"] == pytest.approx(np.log1p((0.5 + 1.0) * 0.5))
    assert vector["foreign"] == 1.0 and vector["country_changed"] == 1.0


def test_a_new_card_has_no_history_features():
    first = txn(1, 50_000.0, 25.0, category="jewelry")
    vector = dict(zip(FEATURES, features(None, first), strict=True))
    assert vector["log_count"] == 0.0 and vector["amount_vs_card"] == 0.0
    assert vector["risky_category"] == 1.0 and vector["foreign"] == 0.0


def test_a_redelivered_event_is_not_counted_twice():
    events = [txn(1, 50_000.0), txn(2, 50_060.0, card="c2"), txn(3, 50_120.0)]
    states: dict = {}
    enrich(states, events)
    once = dict(states)
    enrich(states, events[1:])  # the tail again, as after a crash before the commit
    assert states == once and states["c1"].count == 2 and states["c2"].count == 1


def test_auc_matches_the_pairwise_definition():
    rng = random.Random(1)
    scores = [rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in range(300)]
    labels = [int(rng.random() < 0.3) for _ in range(300)]
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0)
             for p, yp in zip(scores, labels, strict=True) if yp
             for n, yn in zip(scores, labels, strict=True) if not yn]
    assert auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))
    with pytest.raises(ValueError, match="both classes"):
        auc([0.1, 0.2], [1, 1])


def test_promotion_refuses_a_worse_or_equal_candidate():
    assert not decide(0.90, 0.92).promote
    assert not decide(0.92, 0.92).promote
    assert not decide(0.925, 0.92, min_gain=0.01).promote
    assert decide(0.94, 0.92, min_gain=0.01).promote
    assert decide(0.6, None).promote


def test_train_params_are_checked_by_name():
    assert TrainParams.from_params({"epochs": "3", "lr": 0.01}) == TrainParams(epochs=3, lr=0.01)
    with pytest.raises(SpecError, match="unknown epoch "):
        TrainParams.from_params({"epoch": 3})
    with pytest.raises(SpecError, match="epochs must be a whole number, got 'many'"):
        TrainParams.from_params({"epochs": "many"})
    with pytest.raises(SpecError, match="promote must be auto, always or never"):
        TrainParams.from_params({"promote": "sometimes"})


def test_tune_params_are_checked_by_name_before_any_search():
    from sluice.functions.tune import TuneParams

    assert TuneParams.from_params({"trials": "3"}) == TuneParams(trials=3)
    with pytest.raises(SpecError, match="tune params: unknown trial "):
        TuneParams.from_params({"trial": 3})
    with pytest.raises(SpecError, match="tune params: cpus must be a whole number, got 'x'"):
        TuneParams.from_params({"cpus": "x"})
    with pytest.raises(SpecError, match="tune params: promote must be auto, always or never"):
        TuneParams.from_params({"promote": "yes"})


@pytest.mark.parametrize("params, message", [
    ({"days": 0}, "days must be 1 to 366"),
    ({"events": 3, "days": 5}, "events at least days"),
    ({"fraud_rate": 0.7}, "fraud_rate and bad_rate must be 0 to 0.5"),
    ({"cards": 0}, "cards must be at least 1"),
])
def test_generate_params_are_refused_with_the_reason(tmp_path, params, message):
    from sluice.functions.generate import write_raw_files
    from sluice.serving.artifacts import LocalStore

    with pytest.raises(SpecError, match=message):
        write_raw_files(LocalStore(tmp_path), **params)
    assert not list(tmp_path.iterdir())  # nothing written
