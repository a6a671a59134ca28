"""One call, across the phone streams that carry it: its lifetime (:mod:`bridge.call.lifetime`), what it
uses (:mod:`bridge.call.services`), the bot events it builds (:mod:`bridge.call.payloads`,
:mod:`bridge.call.notices`), the bot's webhook answers (:mod:`bridge.call.answers`), its transcript record
(:mod:`bridge.call.record`), its speech-to-text profile and speakers (:mod:`bridge.call.profile`), its
figures (:mod:`bridge.call.figures`), its resume tokens (:mod:`bridge.call.resume`), and where calls are
kept: live and suspended (:mod:`bridge.call.registry`, :mod:`bridge.call.suspended`).

Nothing is imported here: a module that needs one part loads that part only."""
