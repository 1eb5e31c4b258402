"""gymserve: Gymnasium environments served over HTTP."""

import os as _os

__version__ = "0.1.0"

# SDL (pygame, used by rgb_array renders) replaces a default SIGTERM handler with its own, which
# turns the signal into an event nobody reads: the process would ignore SIGTERM. Tell SDL to keep
# its hands off signals, and never to open a window or an audio device on a server.
_os.environ.setdefault("SDL_NO_SIGNAL_HANDLERS", "1")
_os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
_os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
_os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
