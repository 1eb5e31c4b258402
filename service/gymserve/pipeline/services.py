"""What the views call: the Envs service, and the pipeline's verbs that reach other workers and replicas."""

from __future__ import annotations

from dataclasses import dataclass

from ..lifecycle.envs import Envs
from ..routing.forward import Forwarder
from .batch import Batches
from .create import Creates
from .fanout import Fanout


@dataclass(frozen=True)
class Services:
    envs: Envs
    creates: Creates
    batches: Batches
    fanout: Fanout

    @classmethod
    def build(cls, envs: Envs, forwarder: Forwarder | None) -> Services:
        return cls(envs, Creates(envs, forwarder), Batches(envs, forwarder), Fanout(envs, forwarder))
