"""The synthetic report store (tests/factories.py) that the report tests and bench/report.py build on."""
from __future__ import annotations

from store.queries import feature_card
from tests.factories import build_report_store


def test_builder_makes_complete_cards(con):
    build_report_store(con, n_features=20)
    card = feature_card(con, "topk-demo", 1)
    assert card.label == "cat and dog" and len(card.top_examples) == 20 and len(card.quantile_examples) == 50
    assert card.top_examples[0].tokens and len(card.promoted) == 10 and len(card.decoder_neighbors) == 10
    assert feature_card(con, "mp-demo", 3).mp_parents
    assert feature_card(con, "topk-demo", 0).count == 0  # dead: no examples, no histogram
