"""The service's settings and their defaults: ``ServiceSettings`` and the per-user ``UserLimits``.

``spamfilter serve``'s options read their defaults from these dataclasses, so each default is
declared here once. The command line imports this module at start, so it stays light: no asyncio,
no pipeline, no model (the milter's policy is imported only when settings are made).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..corrections import Quota
from ..user_heads import MAX_CORRECTION_BYTES, MAX_CORRECTIONS, MAX_LOADED, MAX_USERS
from ..verdict import Decision
from .access import LOOPBACK, Address, Network

if TYPE_CHECKING:
    import ssl

    from .milter import MilterPolicy

TELL_QUOTA = Quota(1000, 50_000_000)  # corrections (and their bytes) one teacher may keep stored
GPU_BATCH_MAX = 128  # batch_max's default on a GPU, where larger batches pay


# Seconds at least between two retrains of the shared model, and of one user's head: a local user
# flipping a few messages between spam and ham (never charged to a quota) otherwise kept a retrain
# and a model reload going without end. A retrain due sooner runs once the interval has passed.
RETRAIN_INTERVAL = 60.0


@dataclass(frozen=True)
class UserLimits:
    max_users: int = MAX_USERS
    max_loaded: int = MAX_LOADED
    max_corrections: int = MAX_CORRECTIONS
    max_correction_bytes: int = MAX_CORRECTION_BYTES
    max_retrains: int = 1  # user-head retrains running at once (each a thread: CPU, training features)
    retrain_queue: int = 1000  # users waiting for one; beyond, a retrain waits for the user's next TELL
    retrain_interval: float = RETRAIN_INTERVAL  # seconds at least between two retrains of one user's head


def _milter_policy() -> MilterPolicy:
    from .milter import MilterPolicy

    return MilterPolicy()


@dataclass
class ServiceSettings:
    listen: list[Address]
    allow: list[Network]
    max_size: int = 512_000  # spamc's default -s: the largest message spamc sends
    timeout: float = 30.0  # spamd's --timeout-tcp
    max_connections: int = 64
    max_per_peer: int = 0  # slots one peer (address, or uid on a unix socket) may hold; 0: 3/4
    batch_max: int = 32
    batch_wait: float = 0.005
    decision: Decision = field(default_factory=Decision)  # threshold, headers, milter cut-offs
    socket_mode: int | None = None
    socket_owner: str | None = None
    tls: ssl.SSLContext | None = None
    metrics: Address | None = None
    log_interval: float = 0.0  # 0: one line per request
    milter: list[Address] = field(default_factory=list)
    milter_policy: MilterPolicy = field(default_factory=_milter_policy)
    model_name: str = ""
    extra_health: dict[str, str] = field(default_factory=dict)
    # TELL: the model directory whose corrections/ it files messages in (None: TELL refused, as
    # spamd without --allow-tell); with learn_after > 0, this many waiting corrections start
    # `learn_command` (a retrain) and a successful one is loaded as SIGHUP would.
    corrections: Path | None = None
    learn_after: int = 0
    retrain_interval: float = RETRAIN_INTERVAL  # seconds at least between two shared retrains
    # Who may TELL: TCP peers in tell_allow; unix-socket peers whose uid or gid is listed (by
    # default the service's own user and root). Each of them keeps at most tell_quota.
    tell_allow: list[Network] = field(default_factory=lambda: [ipaddress.ip_network(n) for n in LOOPBACK])
    tell_uids: set[int] = field(default_factory=lambda: {0, os.geteuid()})
    tell_gids: set[int] = field(default_factory=set)
    tell_quota: Quota = TELL_QUOTA
    learn_command: list[str] = field(default_factory=list)
    # Per-user heads (service/learning.py): the model directory whose users/ they are in (None:
    # every verdict is the shared model's), and their bounds.
    user_heads: Path | None = None
    user_limits: UserLimits = UserLimits()
