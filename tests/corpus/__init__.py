"""The telephone test corpus (held-out voices, 8 kHz mu-law) and its generator: see make_corpus.py."""
