"""Python client: `RemoteEnv` (a real gymnasium.Env) and `RemoteVectorEnv` (a real gymnasium.vector.VectorEnv)."""

from .errors import ClientError, ConnectionFailed, EnvClosed, RemoteError, ResponseTimeout, ServerUnreachable
from .remote_env import RemoteEnv
from .remote_vector_env import RemoteVectorEnv

__all__ = [
    "ClientError",
    "ConnectionFailed",
    "EnvClosed",
    "RemoteEnv",
    "RemoteError",
    "RemoteVectorEnv",
    "ResponseTimeout",
    "ServerUnreachable",
]
