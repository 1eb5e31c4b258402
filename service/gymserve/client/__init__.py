"""Python client: `RemoteEnv`, a real gymnasium.Env whose env lives on a gymserve server."""

from .http import RemoteError
from .remote_env import RemoteEnv

__all__ = ["RemoteEnv", "RemoteError"]
