"""Python client: `RemoteEnv` (a real gymnasium.Env) and `RemoteVectorEnv` (a real gymnasium.vector.VectorEnv)."""

from .http import RemoteError
from .remote_env import RemoteEnv
from .remote_vector_env import RemoteVectorEnv

__all__ = ["RemoteEnv", "RemoteError", "RemoteVectorEnv"]
