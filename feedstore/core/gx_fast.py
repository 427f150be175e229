"""Two same-result speed-ups of Great Expectations' per-expectation bookkeeping, applied once per process.

GX 1.x rebuilds an expectation's whole `configuration` (a pydantic `dict()` of the expectation) once per domain
and success key in `Expectation._get_domain_kwargs` / `_get_success_kwargs`, which run for every metric of every
expectation: over a hundred configurations per expectation per validation, a large share of GX's time on the
interactions suite (the profile and figures are in bench/RESULTS.md). The replacements build the configuration
once per call and look every key up in it: the same keys, values and defaults, in the same order, the same errors.
"""

from __future__ import annotations

from typing import Any

_applied = False


def apply() -> None:
    """Install the replacements on `great_expectations.expectations.expectation.Expectation` (idempotent)."""
    global _applied
    if _applied:
        return
    from great_expectations.exceptions import InvalidExpectationKwargsError
    from great_expectations.expectations.expectation import Expectation

    def _get_domain_kwargs(self) -> dict[str, str | None]:
        kwargs = self.configuration.kwargs
        domain_kwargs = {key: kwargs.get(key, self._get_default_value(key)) for key in self.domain_keys}
        missing_kwargs = set(self.domain_keys) - set(domain_kwargs.keys())
        if missing_kwargs:
            raise InvalidExpectationKwargsError(f"Missing domain kwargs: {list(missing_kwargs)}")
        return domain_kwargs

    def _get_success_kwargs(self) -> dict[str, Any]:
        domain_kwargs = self._get_domain_kwargs()
        kwargs = self.configuration.kwargs
        success_kwargs = {key: kwargs.get(key, self._get_default_value(key)) for key in self.success_keys}
        success_kwargs.update(domain_kwargs)
        return success_kwargs

    Expectation._get_domain_kwargs = _get_domain_kwargs
    Expectation._get_success_kwargs = _get_success_kwargs
    _applied = True
