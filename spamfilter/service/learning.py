"""Learning in the service: TELL and the shared retrain it starts (``Teaching``), and per-user
heads (``UserLearning``): whose head scores a message, TELL with ``User:``, and the user's head
retrained after it.

spamd's ``User:`` (``spamc -u NAME``) and the milter's one recipient name the user. A user with a
head of their own (:mod:`spamfilter.user_heads`, trained on their corrections) has their mail
scored by it, from the same model run; everyone else gets the shared verdict, byte for byte. A name
that is not a valid user name gets the shared verdict and one log line now and then; a TELL with
one is refused.

A TELL naming a user files the message among that user's corrections (bounded: users, corrections
per user) and, with ``--learn-after N``, retrains that user's head once N of their corrections
have come since the last: in this process, on a thread (numpy, no torch; the shared model is
untouched), and the new head is used from the next message on. At most ``max_retrains`` such
retrains run at once and at most ``retrain_queue`` users wait for one (``retrains.RetrainQueue``:
one place per user, TELLs meanwhile coalesce), so that many users' TELLs cannot take the
service's CPU and memory; TELL answers at once all the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import pwd
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..corrections import CLASS_FOLDERS, TEACHERS_DIR, Corrections, Quota, QuotaExceeded
from ..errors import UsageError, first_line
from ..labelled import message_key
from ..user_heads import (
    UserHead,
    UserHeads,
    UserLimitReached,
    train_user_head,
    trunk_fingerprint,
    valid_user,
)
from . import protocol
from .access import peer_allowed
from .peers import PeerIdentity, peer_credentials
from .retrains import RetrainQueue, Scheduled
from .settings import UserLimits

if TYPE_CHECKING:
    from .settings import ServiceSettings

QUIET_SECONDS = 10.0  # a repeated warning (a client sending bad names): one line this often


class TellRefused(Exception):
    """A user's TELL that cannot be kept: ``code`` is spamd's status (64 usage, 73 cannot keep)."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code, self.text = code, text


def open_user_heads(model_dir: Path, limits: UserLimits, log: logging.Logger) -> UserHeads:
    """The model directory's user heads, bound to its trunk (a head trained for another trunk, one
    from before the model was trained again, is not used). Called at load and on every reload."""
    from ..learn import read_features

    try:
        trunk: str | None = trunk_fingerprint(read_features(model_dir)["train_features"])
    except Exception as error:  # no (readable) training features: heads cannot be checked or trained
        log.warning(
            "user heads: cannot read the training features (%s); user heads are off", first_line(error)
        )
        trunk = "unknown"  # matches no head: every user gets the shared verdict
    return UserHeads(
        model_dir,
        trunk=trunk,
        max_users=limits.max_users,
        max_loaded=limits.max_loaded,
        max_corrections=limits.max_corrections,
        max_correction_bytes=limits.max_correction_bytes,
    )


class UserLearning:
    """The service's user heads: looked up for every message with a user, taught by TELL."""

    def __init__(self, model_dir: Path, limits: UserLimits, learn_after: int, log: logging.Logger) -> None:
        self.model_dir = model_dir
        self.limits = limits
        self.learn_after = learn_after
        self.log = log
        self.heads: UserHeads | None = None
        self._waiting: dict[str, int] = {}  # corrections since a user's last retrain
        self._last_retrain: dict[str, float] = {}  # user -> when their last retrain started (monotonic)
        self._later: dict[str, asyncio.TimerHandle] = {}  # user -> their retrain due after the interval
        self.retrains = RetrainQueue(self._retrain, limits.max_retrains, limits.retrain_queue)
        self._said = 0.0
        self._lock = threading.Lock()
        # Threads of their own: user retrains run beside (not inside) the model's batches.
        self._worker = ThreadPoolExecutor(limits.max_retrains, thread_name_prefix="spamfilter-learn")
        self.on_trained: Callable[[str, float], None] | None = None  # (user, seconds): metrics

    def load(self) -> None:
        """(Re)read the heads for the model now in the directory (start, SIGHUP): blocking."""
        heads = open_user_heads(self.model_dir, self.limits, self.log)
        with self._lock:
            self.heads = heads

    @property
    def loaded(self) -> int:
        heads = self.heads
        return heads.loaded if heads is not None else 0

    def head_of(self, user: str) -> UserHead | None:
        """``user``'s head or None (the shared verdict); never raises (the model's worker calls it)."""
        heads = self.heads
        if heads is None or not user:
            return None
        try:
            return heads.head(user)
        except UsageError as error:
            self._quietly(f"user {user[:40]!r} gets the shared verdict: {first_line(error)}")
            return None
        except OSError as error:
            self._quietly(f"user {user[:40]!r} gets the shared verdict: {error.strerror or error}")
            return None

    def _quietly(self, text: str) -> None:
        now = time.monotonic()
        if now - self._said >= QUIET_SECONDS:
            self._said = now
            self.log.warning("%s", text)

    async def tell(self, user: str, raw: bytes, label: int | None, remove: bool) -> tuple[bool, bool]:
        """File ``raw`` as ``label`` among ``user``'s corrections (None: not set) and/or take it
        out; (set, removed). Raises ``TellRefused``."""
        heads = self.heads
        if heads is None:
            raise TellRefused(73, "user heads are not loaded")
        try:
            valid_user(user)
        except UsageError as error:
            raise TellRefused(64, f"TELL refused: {first_line(error)}") from None
        loop = asyncio.get_running_loop()
        did_set = did_remove = False
        try:
            if label is not None:
                did_set = await loop.run_in_executor(None, heads.add, user, raw, label)
            if remove:
                did_remove = await loop.run_in_executor(None, heads.remove, user, raw)
        except (UserLimitReached, QuotaExceeded) as full:
            raise TellRefused(73, f"TELL refused: {first_line(full)}") from None
        except OSError as error:
            raise TellRefused(
                73, f"cannot keep {user[:40]!r}'s correction: {error.strerror or error}"
            ) from None
        if did_set or did_remove:
            self._waiting[user] = self._waiting.get(user, 0) + 1
            self._retrain_if_due(user)
        return did_set, did_remove

    def _retrain_if_due(self, user: str) -> None:
        if self.learn_after <= 0 or self._waiting.get(user, 0) < self.learn_after:
            return
        wait = self._last_retrain.get(user, -math.inf) + self.limits.retrain_interval - time.monotonic()
        if wait > 0:  # --retrain-interval: once it has passed, the corrections waiting by then
            if user not in self._later:
                self._later[user] = asyncio.get_running_loop().call_later(wait, self._due_later, user)
            return
        if self.retrains.request(user) is Scheduled.FULL:
            # Kept on disk and still counted: the user's next TELL asks again.
            self._quietly(
                f"{self.retrains.queued} users wait for a head retrain (the most: "
                f"{self.retrains.max_queued}); {user[:40]!r}'s waits for their next TELL"
            )

    def _due_later(self, user: str) -> None:
        self._later.pop(user, None)
        self._retrain_if_due(user)

    async def _retrain(self, user: str) -> None:
        """One retrain of ``user``'s head, on every correction kept by now (RetrainQueue runs it)."""
        self._waiting[user] = 0
        self._last_retrain[user] = time.monotonic()
        heads = self.heads
        assert heads is not None
        self.log.info(
            "user %r: head retrain started (%d running, %d waiting)",
            user[:40],
            self.retrains.running,
            self.retrains.queued,
        )
        started = time.perf_counter()
        try:
            trained = await asyncio.get_running_loop().run_in_executor(
                self._worker, train_user_head, self.model_dir, user, heads
            )
        except Exception as error:  # a damaged correction, a full disk: the old head stays
            self.log.error("retrain of %r's head failed: %s", user[:40], first_line(error))
            return
        seconds = time.perf_counter() - started
        heads.invalidate(user)
        what = "trained" if trained is not None else "removed (no corrections left)"
        self.log.info("user %r: head %s in %.1f s", user[:40], what, seconds)
        if self.on_trained is not None:
            self.on_trained(user, seconds)

    async def idle(self) -> None:
        """Shutdown: wait for the retrains running now; those waiting are not started (their
        corrections are kept: ``spamfilter learn --user NAME`` or their next TELL trains them)."""
        for later in self._later.values():  # not started: the corrections stay, as below
            later.cancel()
        self._later.clear()
        dropped = await self.retrains.idle()
        if dropped:
            self.log.info("%d waiting user-head retrains not started (shutting down)", dropped)

    def close(self) -> None:
        self._worker.shutdown(wait=True)


@dataclass(frozen=True)
class Teacher:
    """Who sent a TELL. ``key``: as the quota counts them (a local user by uid, however many
    loopback addresses they use; a remote host by address); ``named``: as --tell-allow names them;
    ``allowed``: may teach at all; ``privileged``: may teach any user's head (a host of a
    --tell-allow network, or a local user in --tell-users), where any other local user (who may
    bind 127.0.0.1 as well as the MTA) teaches only the head of its own account, ``account``."""

    key: str
    named: str
    allowed: bool
    privileged: bool
    account: str | None

    def may_teach(self, user: str) -> bool:
        return self.privileged or (self.account is not None and user == self.account)


class NotTheirs(Exception):
    """A TELL that would move or forget a shared correction another teacher stored."""


class TaughtBy(Corrections):
    """The shared corrections as one teacher changes them: a message already kept may be moved to
    the other class or forgotten only by the teacher who stored it (its ``.teachers`` record, which
    the quota keeps, lists it) or by a ``privileged`` one; a message stored by ``spamfilter learn``
    (no teacher) only by a privileged one. Otherwise any local user could undo everyone's
    corrections, uncharged. Checked under the corrections' lock, at the start of the change, so
    that no other TELL can store or move the message between the check and the change."""

    def __init__(self, model_dir: Path, teacher: str, privileged: bool, quota: Quota) -> None:
        super().__init__(model_dir)
        self.teacher = teacher
        self.privileged = privileged
        self.quota = quota
        self._change: tuple[str, int | None] | None = None  # (message key, class set; None: removed)

    def set(self, raw: bytes, label: int) -> bool:
        self._change = (message_key(raw).hex(), label)
        try:
            return self.add(raw, label, teacher=self.teacher, quota=self.quota)
        finally:
            self._change = None

    def forget(self, raw: bytes) -> bool:
        self._change = (message_key(raw).hex(), None)
        try:
            return self.remove(raw)
        finally:
            self._change = None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with super()._locked():
            if self._change is not None and not self.privileged:
                key, label = self._change
                changed = [other for other in CLASS_FOLDERS if other != label]  # moved from, or removed
                kept = any((self.root / CLASS_FOLDERS[other] / f"{key}.eml").is_file() for other in changed)
                if kept and not self._stored_it(key):
                    raise NotTheirs(
                        f"TELL refused: {self.teacher} did not store this correction; only the "
                        "teacher who stored it (or one in --tell-users) may move or forget it"
                    )
            yield

    def _stored_it(self, key: str) -> bool:
        """Whether the teacher's record lists the message among those it stored."""
        name = hashlib.sha256(self.teacher.encode()).hexdigest()[:32]
        try:
            record = json.loads((self.root / TEACHERS_DIR / f"{name}.json").read_text())
            stored = record["stored"]
            return record["teacher"] == self.teacher and isinstance(stored, dict) and key in stored
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return False


class Teaching:
    """TELL (spamc -L spam|ham|forget): who may teach, the corrections kept, and the shared
    retrain they start (a ``spamfilter learn --retrain`` process, loaded as SIGHUP would); a TELL
    naming a user goes to that user's head (``UserLearning``) with --per-user."""

    def __init__(
        self,
        settings: ServiceSettings,
        log: logging.Logger,
        users: UserLearning | None,
        reload: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.log = log
        self.users = users
        self._reload_soon = reload
        self._retraining: asyncio.Task[None] | None = None
        self._failed_with: int | None = None  # corrections pending when the last retrain failed
        self._counting = False  # a count of the waiting corrections is running
        self._count_again = False  # a TELL came while it ran: count once more after it
        # Whether the kernel names the owner of a local TCP connection (sock_diag; the server asks
        # at start). Where it does, a loopback client it cannot name closed its socket before the
        # service asked: its TELL is refused rather than counted against no one's quota.
        self.owners_named = False
        self._last_retrain = -math.inf  # when the last shared retrain started (monotonic)
        self._later: asyncio.Task[None] | None = None  # the check due once --retrain-interval has passed

    def _teacher(self, writer: Any, identity: PeerIdentity) -> Teacher:
        peer = writer.get_extra_info("peername")
        key, uid = identity
        if isinstance(peer, tuple) and peer:
            allowed = peer_allowed(peer, self.settings.tell_allow)
            if uid is not None:  # a local user (loopback, or the host's own address)
                return Teacher(key, str(peer[0]), allowed, *self._local_user(uid, None))
            local = key == "loopback"  # a local client the kernel could not name: no one's head
            if local and self.owners_named:
                unnamed = f"{peer[0]} (a local client that closed its socket before it was named)"
                return Teacher(key, unnamed, False, False, None)
            return Teacher(key, str(peer[0]), allowed, allowed and not local, None)
        credentials = peer_credentials(writer.get_extra_info("socket"))
        if credentials is None:
            return Teacher("an unknown unix peer", "an unknown unix peer", False, False, None)
        privileged, account = self._local_user(*credentials)
        return Teacher(key, key, privileged, privileged, account)

    def _local_user(self, uid: int, gid: int | None) -> tuple[bool, str | None]:
        """Whether the user is in --tell-users (default: root and the service's own user), by uid
        or by any group of the account (over TCP the kernel names the uid only), so may teach any
        user's head; and the account's name (the one head it may teach otherwise)."""
        groups = {gid} if gid is not None else set()
        try:
            account = pwd.getpwuid(uid)
        except KeyError:
            return uid in self.settings.tell_uids or bool(groups & self.settings.tell_gids), None
        with contextlib.suppress(OSError):
            groups.update(os.getgrouplist(account.pw_name, account.pw_gid))
        return uid in self.settings.tell_uids or bool(groups & self.settings.tell_gids), account.pw_name

    async def tell(
        self, request: protocol.Request, writer: Any, identity: PeerIdentity
    ) -> tuple[bytes, str, str]:
        """File the message under corrections/ (Set: local) or take it out (Remove: local); remote
        reporting (Razor, Pyzor) has no counterpart here and does nothing, as in a spamd without it."""
        if self.settings.corrections is None:
            error = protocol.unavailable("TELL commands are not enabled, set the --allow-tell switch.")
            return error.reply(), "error", error.text
        teacher = self._teacher(writer, identity)
        if not teacher.allowed:
            detail = f"TELL refused: {teacher.named} is not allowed to teach (--tell-allow, --tell-users)"
            self.log.warning("%s", detail)
            return protocol.error_reply(protocol.EX_NOPERM, detail), "refused", detail
        sets, removes = protocol.tell_targets(request)
        corrections = TaughtBy(
            self.settings.corrections, teacher.key, teacher.privileged, self.settings.tell_quota
        )
        label = 1 if request.headers.get("message-class", "").lower() == "spam" else 0
        if request.user and self.users is not None:
            if not teacher.may_teach(request.user):
                detail = (
                    f"TELL refused: {teacher.key} may teach only its own user's head, not "
                    f"{request.user[:40]!r} (--tell-users names who may teach any user's)"
                )
                self.log.warning("%s", detail)
                return protocol.error_reply(protocol.EX_NOPERM, detail), "refused", detail
            return await self._tell_user(request.user, request.message, label, sets, removes)
        loop = asyncio.get_running_loop()
        did_set, did_remove = [], []
        try:
            if "local" in sets and await loop.run_in_executor(None, corrections.set, request.message, label):
                did_set.append("local")
            if "local" in removes and await loop.run_in_executor(None, corrections.forget, request.message):
                did_remove.append("local")
        except NotTheirs as refused:  # kept as it was: another teacher's correction
            detail = str(refused)
            self.log.warning("%s", detail)
            return protocol.error_reply(protocol.EX_NOPERM, detail), "refused", detail
        except QuotaExceeded as full:  # kept as it was: the teacher forgets some, or a retrain...
            detail = f"TELL refused: {full}"
            self.log.warning("%s", detail)
            return protocol.error_reply(protocol.EX_CANTCREAT, detail), "refused", detail
        except OSError as error:  # the service's user cannot write corrections/: say so, to both sides
            detail = f"cannot keep the correction in {corrections.root}: {error.strerror or error}"
            self.log.error("TELL: %s", detail)
            return protocol.error_reply(protocol.EX_CANTCREAT, detail), "error", detail
        what = ("spam" if label else "ham") if did_set else ("removed" if did_remove else "nothing new")
        await self._retrain_if_due(corrections)
        return protocol.tell_reply(did_set, did_remove), "ok", f"tell: {what}"

    async def _tell_user(
        self, user: str, raw: bytes, label: int, sets: set[str], removes: set[str]
    ) -> tuple[bytes, str, str]:
        """A TELL naming a user (spamc -u NAME -L ...): that user's corrections and head only."""
        assert self.users is not None
        try:
            did_set, did_remove = await self.users.tell(
                user, raw, label if "local" in sets else None, "local" in removes
            )
        except TellRefused as refused:
            self.log.warning("%s", refused.text)
            return protocol.error_reply(refused.code, refused.text), "refused", refused.text
        what = ("spam" if label else "ham") if did_set else ("removed" if did_remove else "nothing new")
        done = (["local"] if did_set else [], ["local"] if did_remove else [])
        return protocol.tell_reply(*done), "ok", f"tell: {what}, user={user}"

    async def _retrain_if_due(self, corrections: Corrections) -> None:
        if self.settings.learn_after <= 0 or not self.settings.learn_command:
            return
        if self._counting:  # one count at a time: the running one counts again for this TELL
            self._count_again = True
            return
        self._counting = True
        try:
            again = True
            while again:
                if self._retraining is not None and not self._retraining.done():
                    return  # the running retrain is followed by the next TELL's check
                self._count_again = False
                # Counting reads every correction (a third of a second at 50,000): off the event
                # loop, which serves every other client meanwhile.
                pending = await asyncio.get_running_loop().run_in_executor(None, corrections.pending)
                # After a retrain that failed or was refused, the same corrections would fail
                # again: wait for another one (a misfiled message is taken out with -L forget).
                if pending >= self.settings.learn_after and pending != self._failed_with:
                    wait = self._last_retrain + self.settings.retrain_interval - time.monotonic()
                    if wait > 0:  # --retrain-interval: the check runs again once it has passed
                        if self._later is None or self._later.done():
                            self._later = asyncio.get_running_loop().create_task(
                                self._check_later(wait, corrections)
                            )
                        return
                    self._last_retrain = time.monotonic()
                    self._retraining = asyncio.get_running_loop().create_task(self._retrain(pending))
                    return
                again = self._count_again
        finally:
            self._counting = False

    def stop_waiting(self) -> None:
        """Shutdown: the retrain waiting for --retrain-interval is not started (its corrections
        stay: the next start's first TELL, or ``spamfilter learn --retrain``, learns them)."""
        if self._later is not None:
            self._later.cancel()

    async def _check_later(self, wait: float, corrections: Corrections) -> None:
        self.log.info("%.0f s until the next retrain (--retrain-interval)", wait)
        await asyncio.sleep(wait)
        await self._retrain_if_due(corrections)

    async def _retrain(self, pending: int) -> None:
        """Run the retrain in its own process (torch stays out of the service's) and load its model."""
        self.log.info("retraining on the corrections: %s", " ".join(self.settings.learn_command))
        try:
            process = await asyncio.create_subprocess_exec(
                *self.settings.learn_command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            output, _ = await process.communicate()
        except OSError as error:
            self._failed_with = pending
            self.log.error("cannot start the retrain: %s", error.strerror or error)
            return
        lines = output.decode("utf-8", "replace").strip().splitlines()
        if process.returncode == 0:
            self._failed_with = None
            self.log.info("retrained: %s", lines[-1] if lines else "done")
            self._reload_soon()
        else:
            self._failed_with = pending
            self.log.error("retrain exited %s: %s", process.returncode, lines[-1] if lines else "no output")
