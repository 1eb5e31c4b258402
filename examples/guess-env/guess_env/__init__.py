"""An example env package: importing it registers Guess-v0 with Gymnasium (what GYMSERVE_ENV_MODULES relies on)."""

import gymnasium

from .env import GuessEnv

__all__ = ["GuessEnv"]

# Registered by entry point string, so that Gymnasium (and gymserve) can tell where the env lives.
gymnasium.register(id="Guess-v0", entry_point="guess_env.env:GuessEnv", max_episode_steps=50)

# The constructor arguments a gymserve client may pass (plain data: this package does not import gymserve).
# Without it, gymserve serves Guess-v0 without kwargs. render_mode comes from GuessEnv.metadata.
GYMSERVE_KWARGS = {
    "Guess-v0": {
        "dims": {"type": "int", "min": 1, "max": 8},
        "tolerance": {"type": "float", "min": 0.001, "max": 0.5},
    }
}
