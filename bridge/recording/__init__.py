"""Call recordings: a pure two-channel timeline (:mod:`.timeline`), Ogg pages read and written (:mod:`.ogg`),
the file formats (:mod:`.formats`: WAV written here; Ogg/Opus encoded by the system's libopus,
:mod:`.opus_encoder` and :mod:`.opus_file`, or by libsndfile through soundfile without it) and one writer
thread that owns every open recording (:mod:`.writer`). The call path feeds the timeline on the event loop and
hands what it takes to the writer; nothing here blocks the loop or can fail a call. In a fleet the files are
spools cut into parts for object storage (:mod:`.uploader`, :mod:`.objects`, :mod:`.remote`), listed in the
call record (:mod:`.index`) and joined on read (:mod:`.parts`)."""
