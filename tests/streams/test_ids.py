"""Event ids: the text ``format_id`` writes, and ``parse_id`` taking it apart again."""

from __future__ import annotations

import pytest

from ssegate.streams._store import ID_WIDTH, EventId, format_id, parse_id


@pytest.mark.parametrize("seq", [0, 1, 9, 10, 12345, 10**ID_WIDTH - 1, 10**ID_WIDTH, 10**18])
def test_ids_are_the_epoch_and_the_number_zero_padded(seq: int) -> None:
    event_id = format_id("a1b2c3d4", seq)
    assert event_id == "a1b2c3d4-" + format(seq, f"0{ID_WIDTH}d")
    assert parse_id(event_id) == EventId("a1b2c3d4", seq)


def test_ids_sort_as_their_numbers_up_to_the_width() -> None:
    ids = [format_id("a1b2c3d4", seq) for seq in (1, 2, 10, 99, 100, 10**ID_WIDTH - 1)]
    assert ids == sorted(ids)
    assert format_id("a1b2c3d4", 7) == "a1b2c3d4-000000000007"
