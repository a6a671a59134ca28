"""``bridge demo`` as an IVR: its bot gathers a 4-digit account number after the first answer and ends by
transferring the caller to an agent; the phone presses the keys once it has heard the prompt and follows
the transfer like Twilio (``/twilio/voice``'s ``<Connect action>``, then the ``<Dial>``, the person answering).
The whole demo runs, on the real local engine, in real time (about a minute)."""

from __future__ import annotations

import io

import pytest

from bridge.tools.demo import ACCOUNT, AGENT, run_demo


@pytest.mark.recognition
@pytest.mark.timeout(240)
async def test_the_demo_gathers_the_account_number_and_transfers_to_an_agent() -> None:
    out = io.StringIO()
    result = await run_demo(out)
    text = out.getvalue()
    assert result.gathered is not None, text
    assert (result.gathered["digits"], result.gathered["reason"]) == (ACCOUNT, "num_digits")
    assert f"gathered: 4 digits, {ACCOUNT} (num_digits)" in text
    assert result.dial is not None, text
    assert [t.to for t in result.dial.targets] == [AGENT] and result.dial.timeout_s == 30
    assert result.dial.announces  # the agent hears a briefing first
    assert f"transferred to {AGENT} (Dial, ring timeout 30 s)" in text
    # the keys were the gather's (no call.dtmf), the call ended handed over, after the bot's last answer
    assert "call.dtmf" not in result.events
    assert result.events.count("dtmf.gathered") == 1
    assert result.summary["end_reason"] == "transferred"
    assert result.events.index("transfer.started") < result.events.index("call.ended")
    assert "transfer.completed" in result.events and "transfer.failed" not in result.events
    # the conversation itself still works: every sentence heard, the caller heard the answers
    assert len(result.utterances) == 5
    assert len(result.interrupted) == 1
    # the prompt was heard (in whichever burst of audio it came: the answer before it may run into it)
    assert "account number" in result.replies[0][0]
    assert any("account number" in heard.lower() for _, heard in result.replies), result.replies
