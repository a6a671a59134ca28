"""The console page's static files (``static/``), served by :mod:`bridge.http.console`: plain HTML, CSS
and JavaScript modules, no build step, nothing fetched from outside the bridge."""
