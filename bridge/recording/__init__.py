"""Call recordings: a pure two-channel timeline (:mod:`.timeline`), Ogg page handling (:mod:`.ogg`), the
file formats (:mod:`.formats`: WAV written here, Ogg/Opus through soundfile) and one writer thread that
owns every open recording (:mod:`.writer`). The call path feeds the timeline on the event loop and hands
what it takes to the writer; nothing here blocks the loop or can fail a call."""
