"""Creates: which worker makes a new env (placement, or the worker its Idempotency-Key belongs to), the forward
there, and what a create answers. The views only parse the request and encode the outcome."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgspec

from ..errors import GymServeError, InstanceLost, Reply, Unavailable
from ..lifecycle import idempotency
from ..lifecycle.caller import Caller
from ..lifecycle.envs import Envs
from ..lifecycle.registry import EnvRecord
from ..routing.forward import Forwarder
from ..tenancy.tenants import ANONYMOUS
from . import answers, models, negotiation
from .front import Incoming, relay


@dataclass(frozen=True)
class Made:
    """A create answered here: its payload (encoded by the view in the client's type), status and headers."""

    payload: Any  # an answer of pipeline.answers, or the seed's dict
    status: int = 201
    headers: dict[str, str] = field(default_factory=dict)


Outcome = Made | Reply  # Reply: another worker's answer, relayed as it came


class Creates:
    def __init__(self, envs: Envs, forwarder: Forwarder | None) -> None:
        self.envs = envs
        self.forwarder = forwarder

    def v1(self, incoming: Incoming, caller: Caller) -> Outcome:
        """The seed's create: its fields only (vector envs, wrappers and labels are /v2's; /v1 ignores them)."""
        if (placed := self._placed(incoming, caller, 1)) is not None:
            return placed
        body = models.decode_v1(incoming.body, models.CreateRequest, required=True)
        models.check_limits(body, self.envs.settings)
        seed_fields = msgspec.structs.replace(
            body, wrappers=None, num_envs=None, autoreset_mode=None, labels=None, snapshot=None
        )
        return Made({"instance_id": self.envs.create(seed_fields, caller).instance_id}, 200)

    def v2(self, incoming: Incoming, caller: Caller) -> Outcome:
        key = idempotency.checked_key(incoming.headers.get(idempotency.HEADER))
        if key is not None and (there := self._to_key_home(incoming, caller, key)) is not None:
            return there
        media_type = negotiation.body_type(
            incoming.headers.get("Content-Type"), incoming.headers.get("Content-Encoding")
        )
        body = models.decode(incoming.body, media_type, models.CreateRequest, required=True)
        if key is None and (placed := self._placed(incoming, caller, body.num_envs or 1)) is not None:
            return placed
        models.check_limits(body, self.envs.settings)
        if key is None:
            return self._made(self.envs.create(body, caller))
        return self._keyed(incoming, caller, key, body)

    def fork(self, instance_id: str, caller: Caller, body: models.ForkRequest) -> Made:
        """A new env on this worker in exactly the state of `instance_id`, answered as a create is."""
        return self._made(self.envs.fork(instance_id, caller, body.ttl, body.labels))

    def _made(self, record: EnvRecord) -> Made:
        """What a create answers: the env's info, and where this replica answers without the router (direct path)."""
        info = answers.info(record, self.envs.owner, self.envs.settings.public_url or None)
        return Made(info, headers={"Location": f"/v2/envs/{record.instance_id}"})

    def _keyed(self, incoming: Incoming, caller: Caller, key: str, body: models.CreateRequest) -> Outcome:
        """A keyed create on the worker its key belongs to (lifecycle.idempotency keeps the rule). The tenant's key
        is what is kept, so another tenant's same key never names its env."""
        envs, weight = self.envs, body.num_envs or 1

        def make() -> tuple[str, answers.EnvInfo]:
            made = self._made(envs.create(body, caller))
            return made.payload.instance_id, made.payload

        once = idempotency.Once(
            make=make,
            sibling=lambda: self._keyed_sibling(key, weight),
            forward=lambda slot: self._forward_create(incoming, caller, slot),
            alive=envs.holds,
            keep_seconds=envs.ttl_for(body.ttl, ANONYMOUS) or envs.settings.env_ttl_max_seconds or 86_400.0,
        )
        asked = idempotency.digest(incoming.headers.get("Content-Type"), incoming.body)
        how, answer = envs.keys.create_once(f"{caller.tenant.name}/{key}", asked, once)
        if how == "passed":
            assert isinstance(answer, tuple)
            return answer
        assert isinstance(answer, answers.EnvInfo)
        headers = {"Location": f"/v2/envs/{answer.instance_id}"}
        if how == "replayed":
            headers["Idempotent-Replayed"] = "true"
        return Made(answer, headers=headers)

    # --- where a create is made ---

    def _placed(self, incoming: Incoming, caller: Caller, weight: int) -> Reply | None:
        """A create goes to the sibling that placement picks (this worker is full, or holds more than the placement
        tolerance above the least loaded one; a vector env weighs its sub-envs); None: create here, which answers
        503 if the replica is full.

        The cost: a keep-alive client of the replica's shared port whose create was forwarded has its steps
        forwarded too (one Unix-socket hop). Through the router there is none (it reaches each env's worker on that
        worker's own port), and balance is worth the hop anyway: a SIGKILLed worker loses its share, not 60 % of
        the envs.
        """
        # Draining: this worker refuses the create itself (503 draining), as every sibling would.
        if self.forwarder is None or not caller.may_forward or self.envs.draining.is_set():
            return None
        slot = self.envs.placement.slot_for(weight)
        if slot is None:
            return None
        try:
            return relay(self.forwarder, slot, incoming, "", caller)
        except InstanceLost:
            return None  # that sibling just went away (its socket is gone): create here after all

    def _home_of(self, key: str) -> int:
        """The worker slot an idempotency key belongs to, among the live ones (this one included)."""
        return idempotency.slot_of(key, sorted({*self.envs.placement.live_slots(), self.envs.owner.slot}))

    def _to_key_home(self, incoming: Incoming, caller: Caller, key: str) -> Reply | None:
        """A keyed create goes to the worker its key hashes to, which alone remembers the key; None: that is this
        worker (or it stands alone, or the request was forwarded, or that worker just stopped: its keys went with
        it, so this worker makes the env)."""
        if self.forwarder is None or not caller.may_forward:
            return None
        slot = self._home_of(key)
        if slot == self.envs.owner.slot:
            return None
        try:
            return relay(self.forwarder, slot, incoming, "", caller)
        except GymServeError:
            return None

    def _keyed_sibling(self, key: str, weight: int) -> int | None:
        """The sibling that takes a keyed create its key's worker (this one) has no room for, and keeps the key;
        None: create here (room, no sibling with room, or this worker is itself the one it was passed on to)."""
        envs = self.envs
        if envs.has_room(weight) or self.forwarder is None or self._home_of(key) != envs.owner.slot:
            return None
        return envs.placement.roomiest_sibling(weight)

    def _forward_create(self, incoming: Incoming, caller: Caller, slot: int) -> Reply:
        """A keyed create to the sibling that holds (or will hold) its key: a second hop when it came forwarded."""
        assert self.forwarder is not None
        try:
            return relay(self.forwarder, slot, incoming, "", caller)
        except GymServeError:
            raise Unavailable(
                "the worker chosen for this create stopped; send it again",
                retry_after=self.envs.settings.retry_after_seconds,
            ) from None
