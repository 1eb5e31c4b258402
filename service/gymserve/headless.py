"""What a server process sets before its first render: SDL (pygame, used by rgb_array renders) headless and hands-off.

SDL replaces a default SIGTERM handler with its own, which turns the signal into an event nobody reads: the
process would ignore SIGTERM. SDL_NO_SIGNAL_HANDLERS keeps its hands off signals; the dummy drivers never open a
window or an audio device on a server. SDL reads these when it initializes (the first render), so they are set
where a server process starts (gunicorn_conf.post_fork, create_app), never at import: `import gymserve` (and the
client) leaves the environment of the program that imports it as it was.
"""

from __future__ import annotations

import os

SDL_HEADLESS = {
    "SDL_NO_SIGNAL_HANDLERS": "1",
    "SDL_VIDEODRIVER": "dummy",
    "SDL_AUDIODRIVER": "dummy",
    "PYGAME_HIDE_SUPPORT_PROMPT": "1",
}


def headless_sdl() -> None:
    """Set SDL's variables for a server process, leaving any the operator set."""
    for name, value in SDL_HEADLESS.items():
        os.environ.setdefault(name, value)
