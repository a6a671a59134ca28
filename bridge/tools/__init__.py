"""User tools built on the bridge: ``bridge demo``, the call player (``bridge call``), ``bridge
loadtest`` and each carrier's stream writer. They import the bridge; the bridge never imports them
(``tests/test_layering.py`` checks it), so a production install carries none of their weight."""
