"""Which envs may be created, with which arguments, and creating them through gymnasium.make."""

from __future__ import annotations

import difflib
import fnmatch
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any, get_args

import gymnasium as gym
import orjson
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import AutoresetMode
from gymnasium.wrappers import AddRenderObservation, Autoreset

from ..errors import EnvNotAllowed, InvalidValue, MalformedEnvId, MissingDependency
from ..pipeline.models import DEFAULT_AUTORESET, AutoresetModeName, CreateRequest
from ..settings import Settings
from .modules import declared_kwargs, import_env_modules
from .policy import KwargsPolicy

# Registered ids only: letters, digits and the separators Gymnasium uses. No "module:Env" form,
# which would make gymnasium.make import an arbitrary module.
ENV_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]{0,127}")
# Wrappers a client may ask for by name. AddRenderObservation makes the rgb frame the observation.
WRAPPERS: dict[str, Any] = {"AddRenderObservation": AddRenderObservation}
# A vector env's autoreset modes by their /v2 names (pipeline.models.AutoresetModeName, the one list): Gymnasium's
# AutoresetMode members, in snake case.
AUTORESET_MODES: dict[str, AutoresetMode] = {name: AutoresetMode[name.upper()] for name in get_args(AutoresetModeName)}


def _gymnasium_family(spec: gym.envs.registration.EnvSpec) -> bool:
    return isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.")


@contextmanager
def _dependencies_of(env_id: str) -> Iterator[None]:
    """A missing optional dependency (MuJoCo, Box2D, jax) is the server's gap, not a malformed id: say which."""
    try:
        yield
    except gym.error.DependencyNotInstalled as exc:
        why = str(exc)
    except ImportError as exc:
        why = f"the module '{exc.name}' is not installed"
    else:
        return
    raise MissingDependency(
        f"Environment '{env_id}' needs a dependency that is not installed on this server: {why}",
        details={"field": "env_id"},
    )


def _import_renderers() -> None:
    """pygame's submodules, imported once here: Gymnasium's envs import pygame on their first render, and two
    requests that render first at once in one worker can see a half-imported module (pygame.surfarray without
    pixels3d, a 500)."""
    with suppress(ImportError):
        import pygame.gfxdraw
        import pygame.surfarray  # noqa: F401


class EnvFactory:
    """Creates envs from the allowlist, refusing anything that could run code of the client's choosing."""

    def __init__(self, settings: Settings) -> None:
        """Imports GYMSERVE_ENV_MODULES first (EnvModuleError names one that fails), then builds the allowlist."""
        self.settings = settings
        self._import_lock = threading.Lock()
        self._creators: dict[str, Any] = {}
        _import_renderers()
        module_envs = import_env_modules(settings.env_module_names)
        self.kwargs_policy = KwargsPolicy(settings, declared_kwargs(settings.env_module_names), self._creator)
        patterns = settings.allowed_env_patterns
        self.allowed: frozenset[str] = frozenset(
            env_id
            for env_id, spec in gym.envs.registry.items()
            if ":" not in env_id
            and (
                any(fnmatch.fnmatchcase(env_id, p) for p in patterns)
                if patterns
                else _gymnasium_family(spec) or env_id in module_envs
            )
        )

    def unmatched_patterns(self) -> list[str]:
        """Patterns of GYMSERVE_ALLOWED_ENVS that match no registered env: a typo, or a module not listed."""
        return [
            p for p in self.settings.allowed_env_patterns if not any(fnmatch.fnmatchcase(i, p) for i in self.allowed)
        ]

    def _hint(self, env_id: str) -> str:
        """A pointer to the id the client probably meant: another version, another case, or a close spelling."""
        name = env_id.rsplit("-v", 1)[0]
        others = sorted(i for i in self.allowed if i.rsplit("-v", 1)[0] == name)
        if others:  # Gymnasium 1.x renamed versions, e.g. Taxi-v3 -> Taxi-v4
            return f"; this server has {', '.join(others)}"
        same_case = sorted(i for i in self.allowed if i.lower() == env_id.lower())
        close = same_case or difflib.get_close_matches(env_id, sorted(self.allowed), n=3, cutoff=0.8)
        if close:
            return f": no env of that id is registered on this server; did you mean {' or '.join(close)}?"
        return ": no env of that id is registered on this server"

    def malformed(self, env_id: object) -> MalformedEnvId:
        """The seed's words ("malformed environment ID", which /v1 clients match), plus what is really wrong."""
        well_formed = isinstance(env_id, str) and ENV_ID_PATTERN.fullmatch(env_id)
        hint = self._hint(env_id) if isinstance(env_id, str) and well_formed else ""
        return MalformedEnvId(
            f"Attempted to look up malformed environment ID '{env_id}'{hint}", details={"field": "env_id"}
        )

    def check_env_id(self, env_id: object) -> str:
        if not isinstance(env_id, str) or not ENV_ID_PATTERN.fullmatch(env_id):
            raise self.malformed(env_id)
        if env_id not in gym.envs.registry:
            raise self.malformed(env_id)
        if env_id not in self.allowed:
            raise EnvNotAllowed(
                f"env_id '{env_id}' is not allowed on this server (see GYMSERVE_ALLOWED_ENVS)",
                details={"field": "env_id"},
            )
        return env_id

    def _creator(self, env_id: str) -> Any:
        """The class or function behind an env id, imported once per worker under a lock: two threads importing
        an env's module for the first time at once can see it half-imported (a KeyError from importlib, a 500)."""
        if env_id not in self._creators:
            with self._import_lock, _dependencies_of(env_id):
                if env_id not in self._creators:
                    entry_point = gym.spec(env_id).entry_point
                    loaded = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
                    self._creators[env_id] = loaded
        return self._creators[env_id]

    def check_vector(self, req: CreateRequest) -> None:
        """A vector env's num_envs (bounded by GYMSERVE_MAX_NUM_ENVS) and autoreset mode, before capacity is counted."""
        limit = self.settings.max_num_envs
        if req.num_envs is None:
            if req.autoreset_mode is not None:
                raise InvalidValue("autoreset_mode", "only a vector env (num_envs) has an autoreset mode")
            return
        if isinstance(req.num_envs, bool) or not isinstance(req.num_envs, int) or not 1 <= req.num_envs <= limit:
            raise InvalidValue(
                "num_envs", f"expected an integer from 1 to {limit} (GYMSERVE_MAX_NUM_ENVS), got {req.num_envs!r}"
            )
        if req.autoreset_mode is not None and req.autoreset_mode not in AUTORESET_MODES:
            raise InvalidValue(
                "autoreset_mode", f"expected one of {', '.join(AUTORESET_MODES)}, got {req.autoreset_mode!r}"
            )
        if req.auto_reset:
            raise InvalidValue("auto_reset", "a vector env resets its sub-envs by its autoreset_mode instead")

    def make(self, req: CreateRequest) -> Any:
        """A gym.Env, or a gym.vector.VectorEnv (synchronous, in this process) when `req.num_envs` is set."""
        env_id = self.check_env_id(req.env_id)
        kwargs = dict(req.kwargs or {})
        if len(orjson.dumps(kwargs, option=orjson.OPT_SERIALIZE_NUMPY)) > self.settings.max_kwargs_bytes:
            raise InvalidValue("kwargs", f"larger than the server's limit of {self.settings.max_kwargs_bytes} bytes")
        self._creator(env_id)  # its module imported here, under the lock, before gym.make imports it too
        self.kwargs_policy.check(env_id, kwargs)
        self.check_vector(req)
        wrappers = req.wrappers or ()
        for i, name in enumerate(wrappers):
            if name not in WRAPPERS:
                raise InvalidValue(f"wrappers[{i}]", f"{name!r} is not one of {', '.join(sorted(WRAPPERS))}")
        if wrappers and kwargs.get("render_mode") != "rgb_array":
            raise InvalidValue("kwargs.render_mode", f"the wrappers {list(wrappers)} need render_mode 'rgb_array'")
        kwargs.update(max_episode_steps=req.max_episode_steps, disable_env_checker=req.disable_env_checker)
        try:
            with _dependencies_of(env_id):
                if req.num_envs is not None:
                    return gym.make_vec(
                        env_id,
                        req.num_envs,
                        vectorization_mode="sync",
                        vector_kwargs={"autoreset_mode": AUTORESET_MODES[req.autoreset_mode or DEFAULT_AUTORESET]},
                        wrappers=[WRAPPERS[name] for name in wrappers],
                        **kwargs,
                    )
                env = gym.make(env_id, **kwargs)
        except (TypeError, ValueError, KeyError, AssertionError, gym.error.Error) as exc:
            raise InvalidValue("kwargs", f"rejected by '{env_id}': {type(exc).__name__}: {exc}") from None
        try:
            for name in wrappers:
                env = WRAPPERS[name](env)
        except Exception as exc:  # the env's own refusal, reported as the client's bad choice
            env.close()
            raise InvalidValue("wrappers", f"rejected by '{env_id}': {type(exc).__name__}: {str(exc)[:200]}") from None
        if req.auto_reset:
            env = Autoreset(env)
        return env
