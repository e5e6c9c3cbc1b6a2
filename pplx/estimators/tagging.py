"""Re-tag an existing guide's sites with gradient strategies (a program transform)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pplx.estimators.strategies import Strategy, as_strategy


class _TagMessenger(Messenger):
    def __init__(self, mapping: Mapping[str, Any] | Callable[[str, Any], Any]) -> None:
        super().__init__()
        self.mapping = mapping
        self.seen: set[str] = set()

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) or msg["is_observed"]:
            return
        name = msg["name"]
        if callable(self.mapping) and not isinstance(self.mapping, Mapping):
            strategy = self.mapping(name, msg["fn"])
        else:
            strategy = self.mapping.get(name)
        if strategy is None:
            return
        self.seen.add(name)
        msg["infer"] = {**msg["infer"], "estimator": as_strategy(strategy, name)}


def with_estimators(
    guide: Callable,
    estimators: Mapping[str, Strategy] | Callable[[str, Any], Strategy | None],
) -> Callable:
    """Return ``guide`` with its sites tagged by gradient strategies.

    Works on any guide, autoguides included, without editing it: the tags are added to each
    site's ``infer`` dict as the guide runs, and override tags written in the guide.

    Args:
        guide: The guide.
        estimators: Site name to strategy, or a function ``(name, fn) -> strategy or None``.

    Raises:
        ValueError: when the mapping names a site that the guide does not sample (checked on
            every call, so a typo cannot silently fall back to the default strategy).
    """

    @functools.wraps(guide)
    def tagged(*args: Any, **kwargs: Any) -> Any:
        messenger = _TagMessenger(estimators)
        with messenger:
            result = guide(*args, **kwargs)
        if isinstance(estimators, Mapping):
            missing = sorted(set(estimators) - messenger.seen)
            if missing:
                raise ValueError(
                    f"with_estimators: the guide has no latent sample site named {missing[0]!r}"
                    "; check the spelling against the guide's sites"
                )
        return result

    return tagged
