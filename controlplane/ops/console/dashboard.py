"""`controlplane dashboard`: the web console's URL, opened in a browser when there is one to open.

On a machine without a display (a server, a container, CI) it only prints the URL: the text-mode browsers
Python's `webbrowser` would fall back to there would take over the terminal.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
import webbrowser
from typing import TextIO


def has_display() -> bool:
    return sys.platform in ("darwin", "win32") or bool(os.environ.get("DISPLAY") or
                                                       os.environ.get("WAYLAND_DISPLAY"))


def dashboard(admin: str, out: TextIO, err: TextIO, *, browser: bool = True) -> int:
    url = f"http://{admin}/"
    try:
        with urllib.request.urlopen(f"http://{admin}/healthz", timeout=5):
            pass
    except (urllib.error.URLError, OSError) as exc:
        err.write(f"controlplane: cannot reach the control plane's admin API at {url}: {exc}\n")
        return 2
    out.write(f"{url}\n")
    if browser and has_display() and webbrowser.open(url):
        err.write("opened in your browser\n")
    return 0
