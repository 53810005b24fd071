"""DKIM rotation with overlap (pure: config + the stack's previous outputs -> the plan).

A domain's DKIM selectors move through three states, each one a state an `up`
can be re-run from (README, "Rotating a DKIM key"):

1. published: the selector has its key on the host (its key unit) and its
   record in DNS, but OpenDKIM signs with another one;
2. signing: OpenDKIM signs with it (the signing unit switched to it once its
   record was visible through the host's resolver);
3. retired at T: another selector signs; its record and key stay until
   T + mailstack:dkim_retention, and the first `up` after that drops both
   (the key unit's delete removes the private key).

What the stack knew at its last successful `up` comes from its own outputs
(`dkim_keys`: selector -> {"retired_at": seconds since the epoch, or None};
`dkim_signing`: the selector that signs). A failed `up` leaves them as they
were, so the next `up` starts again from the same state. A stack made before
rotations existed exports only `dkim_selector`: that selector is its one key,
and it signs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Previous:
    """The DKIM state of the stack's last successful `up`."""

    keys: dict[str, float | None] = field(default_factory=dict)  # selector -> retired at (None: not retired)
    signing: str | None = None  # the selector OpenDKIM signs with


@dataclass(frozen=True)
class Plan:
    """What this `up` does with the domain's DKIM selectors."""

    keys: tuple[str, ...]  # selectors with a key unit and a published record, the wanted one first
    signing: str  # the selector the signing unit makes OpenDKIM sign with
    # The signing unit waits for `signing`'s record before it switches. The unit decides that on the
    # host by the same rule (another selector signs there), so a host ahead of the outputs is safe too.
    wait: bool
    retired: dict[str, float]  # selector -> when it stopped signing (every key but `signing`)
    removed: tuple[str, ...]  # selectors past retention: their record and key go in this `up`
    previous_signing: str | None  # the selector that signed before this `up` (its key unit adopts the old `dkim`)

    def outputs(self) -> dict[str, dict[str, float | None]]:
        """`dkim_keys` as the stack exports it."""
        return {sel: {"retired_at": self.retired.get(sel)} for sel in self.keys}


def previous_from_outputs(dkim_keys: Any, dkim_signing: Any, dkim_selector: Any) -> Previous:
    """The stack's previous outputs (None where it has none) as a `Previous`.

    Numbers come back from the backend as floats; anything unreadable counts
    as no previous key (the first `up` of a stack has no outputs at all).
    """
    keys: dict[str, float | None] = {}
    if isinstance(dkim_keys, dict):
        for selector, info in dkim_keys.items():
            retired = info.get("retired_at") if isinstance(info, dict) else None
            keys[str(selector)] = float(retired) if isinstance(retired, (int, float)) else None
    signing = dkim_signing if isinstance(dkim_signing, str) and dkim_signing else None
    if not keys and isinstance(dkim_selector, str) and dkim_selector:
        # A stack from before rotations: one key, and it signs.
        keys, signing = {dkim_selector: None}, dkim_selector
    if signing is not None and signing not in keys:
        keys[signing] = None
    return Previous(keys, signing)


def plan(wanted: str, previous: Previous, retention_seconds: float, now: float) -> Plan:
    """The plan of this `up`: `wanted` (mailstack:dkim_selector) signs in the end.

    - `wanted` always has a key and a record; it signs at once when nothing
      signed before (the domain's first key: nothing verifies it yet anyway) or
      when it already signed; otherwise the signing unit waits for its record.
    - The selector that signed before (if another) keeps its key and record and
      is retired now: `retired` holds `now` for it, exported only if this `up`
      succeeds (a failed switch leaves it signing, not retired).
    - A selector retired earlier keeps its time; once `retired_at + retention`
      is past (`<= now`) it is dropped: no key unit, no record. One retired
      in this `up` is never dropped by it (retention 0s: the next `up`).
    - A key that never signed and is not wanted (a rotation abandoned before
      its switch) counts as retired now: its record may already be cached.
    """
    retired: dict[str, float] = {}
    removed: list[str] = []
    keys = [wanted]
    for selector, retired_at in previous.keys.items():
        if selector == wanted:
            continue
        # Retired in an earlier `up` and past retention: gone. One retired now
        # stays at least until the next `up`, whatever the retention.
        if retired_at is not None and retired_at + retention_seconds <= now:
            removed.append(selector)
            continue
        keys.append(selector)
        retired[selector] = now if retired_at is None else retired_at
    wait = previous.signing is not None and previous.signing != wanted
    return Plan(tuple(keys), wanted, wait, retired, tuple(removed), previous.signing)
