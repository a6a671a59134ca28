"""One record for a fleet: two bridges on one PostgreSQL (``BRIDGE_DATABASE_URL``, a real server started by
the tests) each answer for the other's calls: a call carried by A is listed by B and its transcript read
from B, whole; retention run by B deletes it for both. Without the URL each keeps its own SQLite file
(tests/test_transcripts.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bridge.errors import ConfigError
from bridge.http.transcripts import TRANSCRIPTS
from bridge.settings import Settings
from bridge.transcripts_pg import PgTranscriptStore
from tests.support.calls import BridgeFactory, caller_audio, play_call, wait_for
from tests.support.fakes import FakeGladia, FakeWebhook, expected_texts
from tests.test_transcripts_pg import pg_server, pg_url  # noqa: F401 (the fixtures)

TOKEN = "api-token-for-the-fleet-record"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _get(server: Any, path: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=AUTH) as http, http.get(server.make_url(path)) as resp:
        return resp.status, await resp.json()


@pytest.mark.timeout(60)
async def test_any_instance_answers_for_a_call_another_carried(
    make_bridge: BridgeFactory,
    fake_gladia: FakeGladia,
    webhook: tuple[FakeWebhook, str],
    pg_url: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    hook, _ = webhook
    a = await make_bridge({"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_DATABASE_URL": pg_url})
    b = await make_bridge(
        {"BRIDGE_API_TOKEN": TOKEN, "BRIDGE_DATABASE_URL": pg_url, "BRIDGE_DATA_DIR": str(tmp_path / "b")}
    )
    audio = caller_audio(3.0)
    assert await play_call(str(a.make_url("/twilio/stream")), audio) == 1000
    await wait_for(lambda: bool(hook.events("transcript.completed")), timeout=20)
    call_id = hook.events("call.started")[0]["call"]["id"]
    texts = expected_texts(audio, fake_gladia.segment_bytes(next(iter(fake_gladia.sessions.values()))))

    async with asyncio.timeout(10):  # A's last finals reach the database within its commit window
        while True:
            status, record = await _get(b, f"/v1/calls/{call_id}/transcript")
            if status == 200 and not record["active"] and len(record["utterances"]) == len(texts):
                break
            await asyncio.sleep(0.05)
    assert [u["text"].strip() for u in record["utterances"]] == texts
    status, listing = await _get(b, "/v1/calls?since=0")
    assert status == 200 and [c["id"] for c in listing["calls"]] == [call_id]
    assert not (tmp_path / "b" / "transcripts.sqlite3").exists()  # B kept no file of its own
    # retention on B (its purge, a cutoff past the call) deletes the call for A too
    store = b.app[TRANSCRIPTS]
    assert isinstance(store, PgTranscriptStore)
    assert await asyncio.to_thread(store.purge, time.time() + 60) == 1
    assert (await _get(a, f"/v1/calls/{call_id}/transcript"))[0] == 404


def test_the_database_url_is_a_secret_from_the_environment_only(tmp_path: Path) -> None:
    url = "postgresql://bridge:hunter2@db.internal:5432/bridge"
    settings = Settings.load({"BRIDGE_DATABASE_URL": url})
    assert settings.transcripts.database_url is not None
    assert settings.transcripts.database_url.get_secret_value() == url
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.redacted())
    with pytest.raises(ConfigError, match=r"transcripts\.database_url \(from BRIDGE_DATABASE_URL\)"):
        Settings.load({"BRIDGE_DATABASE_URL": "mysql://db/bridge"})
    config = tmp_path / "bridge.toml"
    config.write_text(f'[transcripts]\ndatabase_url = "{url}"\n')
    with pytest.raises(ConfigError, match="environment only"):
        Settings.load({}, config_path=config)
    assert PgTranscriptStore.ERRORS  # the API answers 503 on these
