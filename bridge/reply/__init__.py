"""The way back: the bot's actions, speech out, the playout clock, barge-in."""
