"""The /ui page says what its list shows: the caller's envs on the whole farm (lists cross workers and replicas)."""

from __future__ import annotations

from typing import Any


def test_the_page_does_not_say_its_list_is_one_replicas(client: Any) -> None:
    page = client.get("/ui/").get_data(as_text=True)
    assert "every worker and replica" in page
    assert "one replica" not in page and "this replica's envs" not in page
