"""Everything one worker process holds: settings, env factory, registry, id minter and drain state."""

from __future__ import annotations

import logging
import threading

from .envs import CreateRequest, EnvFactory
from .errors import Draining, InvalidValue
from .ids import IdMinter, Owner
from .registry import EnvRecord, Registry
from .settings import Settings

log = logging.getLogger(__name__)


class Worker:
    """The core of one worker; the HTTP layer calls it and never touches gymnasium directly."""

    def __init__(self, settings: Settings, owner: Owner | None = None) -> None:
        self.settings = settings
        self.owner = owner or Owner(settings.node_id, 0, 0)
        self.factory = EnvFactory(settings)
        self.registry = Registry(settings)
        self.ids = IdMinter(self.owner)
        self.draining = threading.Event()

    def ttl_for(self, requested: object) -> float:
        """The idle TTL of a new env: the server default, or the client's wish capped by the server maximum."""
        if requested is None:
            return self.settings.env_ttl_seconds
        if isinstance(requested, bool) or not isinstance(requested, (int, float)) or requested <= 0:
            raise InvalidValue("ttl", f"expected a positive number of seconds, got {requested!r}")
        cap = self.settings.env_ttl_max_seconds
        return float(min(requested, cap) if cap else requested)

    def create(self, req: CreateRequest, ttl: float) -> EnvRecord:
        if self.draining.is_set():
            raise Draining(
                "this server is draining for shutdown and takes no new envs; retry on another",
                retry_after=self.settings.retry_after_seconds,
            )
        self.factory.check_env_id(req.env_id)
        with self.registry.reserve():
            env = self.factory.make(req)
            record = EnvRecord(instance_id=self.ids.mint(), env_id=req.env_id, env=env, ttl=ttl)
            self.registry.add(record)
        log.info("created env %s (%s)", record.instance_id, record.env_id)
        return record

    def close(self, instance_id: str) -> EnvRecord:
        record = self.registry.pop(instance_id)
        log.info("closed env %s (%s)", record.instance_id, record.env_id)
        return record
