"""What a client can do to an env it holds: native values in and out, env failures made into errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import gymnasium as gym
import numpy as np

from ..codec import actions, seed
from ..errors import EnvFailed, InvalidValue, NotSupported, ResetNeeded
from ..lifecycle.registry import EnvRecord
from .models import AutoresetModeName

# The modes these rules name, typed so that mypy holds them to envs.AutoresetModeName, the one list of modes.
_DISABLED: AutoresetModeName = "disabled"
_NEXT_STEP: AutoresetModeName = "next_step"

log = logging.getLogger(__name__)
T = TypeVar("T")
StepResult = tuple[Any, float, bool, bool, dict[str, Any]]
VectorStepResult = tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]
Seeds = int | list[int | None] | None  # a seed, or (vector envs) one seed or None per sub-env


def _guarded(record: EnvRecord, what: str, call: Callable[..., T], *args: Any) -> T:
    """Run an env call; the env's own exceptions become a clear 4xx instead of a 500."""
    try:
        return call(*args)
    except gym.error.ResetNeeded:
        raise ResetNeeded(
            f"Instance_id {record.instance_id}: call reset before {what}", details={"instance_id": record.instance_id}
        ) from None
    except Exception as exc:
        log.warning("env %s (%s) raised during %s: %r", record.env_id, record.instance_id, what, exc)
        raise EnvFailed(
            f"the environment '{record.env_id}' raised {type(exc).__name__} during {what}: {str(exc)[:200]}"
        ) from None


def _single(record: EnvRecord) -> None:
    if record.num_envs is not None:
        raise NotSupported(
            f"Instance_id {record.instance_id} is a vector env of {record.num_envs} sub-envs: "
            "reset and step it with batched values through /v2/envs/<id>/reset and /step",
            details={"instance_id": record.instance_id},
        )


def reset(record: EnvRecord, seed: int | None, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    _single(record)
    obs, info = _guarded(record, "reset", lambda: record.env.reset(seed=seed, options=options))
    record.episodes += 1
    record.episode_over = False
    # An episode cut short by a reset never finished: it has no return to report.
    record.episode_return, record.episode_length, record.autoreset_pending = 0.0, 0, False
    if seed is not None:
        record.seed = seed
    if record.meters is not None:
        record.meters.resets.inc()
    return obs, info


def vector_reset(record: EnvRecord, seeds: Seeds, options: dict[str, Any] | None) -> tuple[Any, dict[str, Any]]:
    """Reset a vector env: every sub-env, or those of `options.reset_mask` (Gymnasium's convention)."""
    count = record.weight
    if isinstance(seeds, list) and len(seeds) != count:
        raise InvalidValue("seed", f"expected one seed (or null) per sub-env: {count}, got {len(seeds)}")
    mask = None
    if options is not None and "reset_mask" in options:
        mask = _reset_mask(options["reset_mask"], count)
        options = {**options, "reset_mask": mask}
        count = int(mask.sum())
    obs, info = _guarded(record, "reset", lambda: record.env.reset(seed=seeds, options=options))
    record.episodes += count
    _vector_tally(record).restart(mask)
    if isinstance(seeds, int):
        record.seed = seeds
    if record.meters is not None:
        record.meters.resets.inc(count)
    return obs, info


def _reset_mask(value: Any, num_envs: int) -> np.ndarray:
    mask = np.asarray(value)
    if mask.dtype != np.bool_ or mask.shape != (num_envs,):
        raise InvalidValue("options.reset_mask", f"expected {num_envs} booleans, one per sub-env")
    return mask


def vector_step(record: EnvRecord, action: Any) -> VectorStepResult:
    """Step every sub-env of a vector env with its batched action; its autoreset mode resets finished ones."""
    batched = actions.to_member(record.env.action_space, action, "action")
    pending = getattr(record.env, "_autoreset_envs", None)  # SyncVectorEnv: sub-envs whose episode ended
    if record.autoreset_mode == _DISABLED and pending is not None and pending.any():
        ended = np.flatnonzero(pending).tolist()
        raise ResetNeeded(
            f"Instance_id {record.instance_id}: sub-envs {ended} ended their episode; autoreset_mode is disabled, so "
            "reset them (options.reset_mask) before the next step",
            details={"instance_id": record.instance_id, "sub_envs": ended},
        )
    started = time.perf_counter()
    obs, rewards, terminated, truncated, info = _guarded(record, "step", record.env.step, batched)
    elapsed = record.step_seconds = time.perf_counter() - started
    finished = int(np.count_nonzero(terminated | truncated))
    record.steps += record.weight
    if record.autoreset_mode != _DISABLED:
        record.episodes += finished  # this step's or the next one's autoreset starts them again
    for episode_return, length in _vector_tally(record).add(record.autoreset_mode, rewards, terminated | truncated):
        _episode_finished(record, episode_return, length)
    meters = record.meters
    if meters is not None:
        meters.step_seconds.observe(elapsed)
        meters.steps.inc(record.weight)
        if finished:
            meters.episodes.inc(finished)
    return obs, rewards, terminated, truncated, info


def step(record: EnvRecord, action: Any, field: str = "action") -> StepResult:
    _single(record)
    return step_native(record, actions.to_member(record.env.action_space, action, field))


def step_native(record: EnvRecord, action: Any) -> StepResult:
    """The step path: env.step timed and counted; an env failure becomes a clear error."""
    _single(record)
    started = time.perf_counter()
    obs, reward, terminated, truncated, info = _guarded(record, "step", record.env.step, action)
    elapsed = record.step_seconds = time.perf_counter() - started
    record.steps += 1
    past_the_end = record.episode_over  # /v1, like the seed, lets a client step on after the end: no new episode
    record.episode_over = (terminated or truncated) and not record.auto_reset
    if record.autoreset_pending:  # the Autoreset wrapper reset the env in this call: reward 0, no env step
        record.autoreset_pending = False
    elif not past_the_end:
        record.episode_return += float(reward)
        record.episode_length += 1
        if terminated or truncated:
            _episode_finished(record, record.episode_return, record.episode_length)
            record.episode_return, record.episode_length, record.autoreset_pending = 0.0, 0, record.auto_reset
    meters = record.meters
    if meters is not None:
        meters.step_seconds.observe(elapsed)
        meters.steps.inc()
        if (terminated or truncated) and not past_the_end:
            meters.episodes.inc()
    return obs, float(reward), bool(terminated), bool(truncated), info


def _episode_finished(record: EnvRecord, episode_return: float, length: int) -> None:
    record.recent_episodes.append((episode_return, length))
    if record.meters is not None:
        record.meters.episode_return.observe(episode_return)
        record.meters.episode_length.observe(length)


class VectorTally:
    """The running return and length of each sub-env of a vector env, and which sub-envs just finished."""

    def __init__(self, num_envs: int) -> None:
        self.returns = np.zeros(num_envs)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.finished = np.zeros(num_envs, dtype=np.bool_)

    def restart(self, mask: np.ndarray | None) -> None:
        """A reset of the sub-envs of `mask` (all when None): their unfinished episodes are dropped."""
        where = slice(None) if mask is None else mask
        self.returns[where], self.lengths[where], self.finished[where] = 0.0, 0, False

    def add(self, autoreset_mode: str | None, rewards: np.ndarray, done: np.ndarray) -> list[tuple[float, int]]:
        """Count one step; the (return, length) of each episode it finished, in sub-env order."""
        # next_step: a sub-env that finished in the last step is reset in this one (reward 0, not an env step).
        counted = ~self.finished if autoreset_mode == _NEXT_STEP else np.ones_like(self.finished)
        self.returns += np.where(counted, rewards, 0.0)
        self.lengths += counted
        done = np.asarray(done, dtype=np.bool_)
        ended = [(float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(done)]
        self.returns[done], self.lengths[done] = 0.0, 0
        self.finished = done.copy()
        return ended


def _vector_tally(record: EnvRecord) -> VectorTally:
    if record.vector_tally is None:
        record.vector_tally = VectorTally(record.weight)
    tally: VectorTally = record.vector_tally
    return tally


def render(record: EnvRecord) -> Any:
    return _guarded(record, "render", record.env.render)


def sample_action(record: EnvRecord) -> Any:
    return seed.to_jsonable(_guarded(record, "sample", record.env.action_space.sample))


def action_contains(record: EnvRecord, value: Any) -> bool:
    try:
        actions.to_member(record.env.action_space, value, "action")
    except InvalidValue:
        return False
    return True


def transitions(record: EnvRecord) -> Any:
    table = getattr(record.env.unwrapped, "P", None)
    if table is None:
        raise NotSupported(
            f"'{record.env_id}' has no transition table (only tabular envs such as "
            "FrozenLake, Taxi and CliffWalking do)"
        )
    return seed.to_jsonable(table)


def episodes(
    record: EnvRecord, count: int, seed: int | None, max_steps: int, max_bytes: int
) -> list[list[tuple[Any, float]]]:
    """Run `count` episodes with random actions; each is [(obs, reward), ...] starting at (reset obs, 0).

    Bounded in steps and in the bytes of observations held for the answer (frames are 720 KB each).
    """
    result: list[list[tuple[Any, float]]] = []
    budget = max_steps
    bytes_left = max_bytes
    for n in range(count):
        obs, _ = reset(record, seed if n == 0 else None, None)
        episode: list[tuple[Any, float]] = [(obs, 0.0)]
        result.append(episode)
        done = False
        while not done:
            if budget == 0:
                raise InvalidValue(
                    "count",
                    f"the episodes took more than the server's limit of {max_steps} "
                    "steps in one request (GYMSERVE_EPISODES_MAX_STEPS); ask for fewer",
                )
            budget -= 1
            bytes_left -= getattr(obs, "nbytes", 64)
            if bytes_left < 0:
                raise InvalidValue(
                    "count",
                    f"the episodes' observations exceed the server's limit of {max_bytes} bytes in one request "
                    "(64 x GYMSERVE_MAX_BODY_BYTES); ask for fewer",
                )
            obs, reward, terminated, truncated, _ = step_native(record, record.env.action_space.sample())
            episode.append((obs, reward))
            done = terminated or truncated
    return result
