"""How an order's checks are run: strictly when ordering (a refusal stops it), or as a
quote's checklist (each refusal is noted, and the quote goes on)."""

from collections.abc import Callable

from marketplace.exceptions import ServiceError

Check = Callable[[str, Callable[[], object]], object]


def strictly(name: str, check: Callable[[], object]) -> object:
    """An order's check: a refusal stops the order."""
    return check()


class Checklist:
    """A quote's checks: each refusal is noted, and the quote goes on to the next check."""

    def __init__(self):
        self.results: list[dict] = []

    def __call__(self, name: str, check: Callable[[], object]) -> object:
        try:
            outcome = check()
        except ServiceError as refusal:
            # A check of several parts (e.g. both areas of a comparison) fails if any part does.
            self.results = [result for result in self.results if result["check"] != name or not result["passed"]]
            self.results.append({"check": name, "passed": False, "code": refusal.code, "detail": refusal.message})
            return None
        if not any(result["check"] == name for result in self.results):
            self.results.append({"check": name, "passed": True, "code": None, "detail": ""})
        return outcome
