"""One entry vocabulary: what the refresher writes is what the server serves and what
`tokend logs` renders. The entries here come from real refreshes against the simulator."""

from __future__ import annotations

import io
import re
from pathlib import Path

import orjson
import pytest
import webstack
from kit import Harness, refresh_token

from tokend import logclient, vocabulary, web


async def refresh_revoked(harness: Harness, account_id: str) -> dict:
    """A real invalid_grant: the simulator revoked the token; the entry as stored and sent."""
    token = refresh_token()
    harness.sim.revoke(token)
    await harness.add(account_id, token=token)
    outcome = await harness.worker.refresh_now(account_id)
    assert outcome.error_code == "invalid_grant"
    (entry,) = await harness.db.list_entries(account_id=account_id)
    return orjson.loads(orjson.dumps(entry.to_dict()))


async def test_a_real_invalid_grant_renders_its_code_and_description(harness: Harness) -> None:
    entry = await refresh_revoked(harness, "a1")
    assert entry["action"] == vocabulary.TOKEN_REFRESH_FAILED
    assert entry["source"] == vocabulary.MANUAL
    assert set(entry["error"]) == set(vocabulary.ERROR_FIELDS)
    description = entry["error"]["description"]
    assert description  # the provider's own words
    text = logclient.render(entry)
    assert f"ERROR invalid_grant: {description}\n" in text
    assert "\033[" not in text
    assert "\033[31;1mtoken_refresh_failed\033[0m" in logclient.render(entry, color=True)


async def test_a_failure_without_words_shows_its_code_alone() -> None:
    entry = {"id": 1, "created_at": "2024-05-01T12:00:00+00:00", "action": "token_refresh_failed",
             "source": "scheduled", "error": vocabulary.error("timeout", None)}
    assert logclient.render(entry).endswith("ERROR timeout\n")


async def test_every_entry_the_code_writes_uses_the_vocabulary(harness: Harness) -> None:
    await refresh_revoked(harness, "a1")
    await harness.add("a2")
    await harness.worker.refresh_now("a2", source=vocabulary.DEBUG)
    await harness.add("a3")
    await harness.worker.refresh_now("a3")
    entries = await harness.db.list_entries()
    assert {e.action for e in entries} == {
        vocabulary.TOKEN_REFRESH_FAILED, vocabulary.TOKEN_REFRESH_DEBUG,
        vocabulary.TOKEN_REFRESHED}
    for entry in entries:
        assert entry.source in vocabulary.SOURCES
        assert entry.error is None or set(entry.error) == set(vocabulary.ERROR_FIELDS)
        assert vocabulary.failed(entry.to_dict()) == (entry.account_id == "a1")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_the_server_serves_the_vocabulary_without_a_token(store, keyring) -> None:
    async with webstack.running(store, keyring) as s:
        status, body = await s.get_json("/api/vocabulary", token=None)
        assert status == 200
        assert body == {"sources": list(vocabulary.SOURCES),
                        "actions": list(vocabulary.ACTIONS),
                        "error_fields": list(vocabulary.ERROR_FIELDS),
                        "event_types": list(vocabulary.EVENT_TYPES),
                        "close_codes": {"bad_hello": 4400, "unauthorized": 4401,
                                        "hello_timeout": 4408}}
        await s.loop.cycle()  # a heartbeat, as the loop writes it
        out = io.StringIO()
        await logclient.follow(s.url, webstack.ADMIN, follow=False, out=out)
        assert vocabulary.WORKER_HEARTBEAT in out.getvalue()
        (heartbeat,) = await s.db.list_entries(action=vocabulary.WORKER_HEARTBEAT)
        assert heartbeat.action in body["actions"] and heartbeat.source in body["sources"]


def test_the_page_keeps_no_copy_of_the_vocabulary() -> None:
    """The terminal's scripts and markup name no source, action or close code: they get them
    from /api/vocabulary. (Its style sheet may colour known sources.)"""
    static = Path(web.__file__).parent / "static"
    for path in sorted(static.glob("*.js")) + sorted(static.glob("*.html")):
        text = path.read_text()
        named = [w for w in (*vocabulary.SOURCES, *vocabulary.ACTIONS)
                 if re.search(rf"""["'`]{w}["'`]""", text)]
        named += [c for c in map(str, vocabulary.CLOSE_CODES.values()) if c in text]
        assert named == [], f"{path.name} names {named}"
