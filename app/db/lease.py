"""A run's lease as this process holds it: who, at which epoch, and how fresh.

The database is the authority (runs.lease_owner, lease_epoch, lease_expires_at,
judged by its clock); this object is the owner's local view, used for two things:
every write of the run proves `owner` and `epoch` in its own transaction (the
event log's fence), and an action starts only while the last successful renewal
is recent enough that the lease cannot lapse before the action ends. The local
deadline counts from when a renewal was *sent*, so it can only be pessimistic:
the database set the expiry later than that.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class Lease:
    run_id: str
    session_id: str
    owner: str
    epoch: int
    ttl_s: float
    renewed_at: float = field(default_factory=time.monotonic)
    lost: bool = False

    def renewed(self, sent_at: float) -> None:
        """A renewal sent at `sent_at` (monotonic) succeeded."""
        self.renewed_at = max(self.renewed_at, sent_at)

    def remaining_s(self) -> float:
        """Seconds the lease is certainly still ours (<= 0: it may have lapsed)."""
        return self.ttl_s - (time.monotonic() - self.renewed_at)

    def may_act(self, margin_s: float) -> bool:
        """Whether an action of up to `margin_s` seconds ends before the lease can lapse."""
        return not self.lost and self.remaining_s() > margin_s
