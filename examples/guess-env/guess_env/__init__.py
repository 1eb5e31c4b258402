"""An example env package: importing it registers Guess-v0 with Gymnasium (what GYMSERVE_ENV_MODULES relies on)."""

import gymnasium

from .env import GuessEnv

__all__ = ["GuessEnv"]

# Registered by entry point string, so that Gymnasium (and gymserve) can tell where the env lives.
gymnasium.register(id="Guess-v0", entry_point="guess_env.env:GuessEnv", max_episode_steps=50)
