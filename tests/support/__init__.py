"""Test support: fakes of Gladia and the bot with fault switches, a raw WebSocket client, a TCP
proxy that cuts connections, the bridge as a process, speech samples. No tests here."""
