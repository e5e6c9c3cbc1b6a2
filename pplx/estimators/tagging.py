"""Re-tag an existing guide's sites with gradient strategies (a program transform)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from pplx.estimators.strategies import Strategy, StrategyError, as_strategy

_AUTOGUIDE_SUFFIX = "_unconstrained"


class _TagMessenger(Messenger):
    """Adds ``infer["estimator"]`` to the named sites as the guide runs.

    Autoguides sample a random *auxiliary* site (``AutoNormal``: ``"<name>_unconstrained"``)
    and then a deterministic ``Delta`` site ``"<name>"``; a strategy only means something on
    the random site, so a tag for ``"<name>"`` moves to ``"<name>_unconstrained"``.
    """

    def __init__(self, mapping: Mapping[str, Any] | Callable[[str, Any], Any]) -> None:
        super().__init__()
        self.mapping = mapping
        self.seen: set[str] = set()
        self.moved: set[str] = set()

    def _lookup(self, name: str, fn: Any) -> Any:
        if callable(self.mapping) and not isinstance(self.mapping, Mapping):
            return self.mapping(name, fn)
        return self.mapping.get(name)

    def _pyro_sample(self, msg: dict) -> None:
        if site_is_subsample(msg) or msg["is_observed"]:
            return
        name, fn = msg["name"], msg["fn"]
        strategy = self._lookup(name, fn)
        if (
            strategy is None
            and name.endswith(_AUTOGUIDE_SUFFIX)
            and msg["infer"].get("is_auxiliary", False)
        ):
            base = name[: -len(_AUTOGUIDE_SUFFIX)]
            strategy = self._lookup(base, fn)
            if strategy is not None:
                self.moved.add(base)
        if strategy is None:
            return
        if (
            type(fn).__name__ == "Delta"
            or type(getattr(fn, "base_dist", None)).__name__ == "Delta"
        ):
            self.seen.add(name)
            if name in self.moved:
                return
            raise StrategyError(
                f"site {name!r} is a deterministic (Delta) site, the image of an autoguide's "
                "random latent; gradient strategies apply to random sites: tag the guide's "
                "auxiliary sample site instead (e.g. '_AutoMultivariateNormal_latent')"
            )
        self.seen.add(name)
        msg["infer"] = {**msg["infer"], "estimator": as_strategy(strategy, name)}


def with_estimators(
    guide: Callable,
    estimators: Mapping[str, Strategy] | Callable[[str, Any], Strategy | None],
) -> Callable:
    """Return ``guide`` with its sites tagged by gradient strategies.

    Works on any guide, autoguides included, without editing it: the tags are added to each
    site's ``infer`` dict as the guide runs, and override tags written in the guide. For
    ``AutoNormal``-style guides the tag of a latent ``"z"`` applies to its random site
    ``"z_unconstrained"``; tagging a deterministic ``Delta`` site otherwise is an error.

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
            missing = sorted(set(estimators) - messenger.seen - messenger.moved)
            if missing:
                raise ValueError(
                    f"with_estimators: the guide has no latent sample site named {missing[0]!r}"
                    "; check the spelling against the guide's sites"
                )
        return result

    return tagged
