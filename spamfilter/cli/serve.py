"""``spamfilter serve``: the daemon's options into ServiceSettings, then the service."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..modeldir import default_model_dir
from ..service.settings import GPU_BATCH_MAX, RETRAIN_INTERVAL, TELL_QUOTA, ServiceSettings, UserLimits

if TYPE_CHECKING:
    from ..runtime import Classifier

from .common import (
    CONTEXT,
    FiniteFloatRange,
    _library_errors,
    choice_option,
    cli,
    count_option,
    explain_option,
    gpu_option,
    header_prefix_option,
    model_option,
    threshold_option,
    variant_option,
)

# --------------------------------------------------------------------------- serve


def _say_if_read_only(directory: Path, logger: Any) -> None:
    """--allow-tell with a model directory the service cannot write (a read-only unit, another
    owner): one line at start, rather than an error at the first TELL or retrain."""
    import os

    from ..corrections import CORRECTIONS_DIR

    folder = directory / CORRECTIONS_DIR
    where = folder if folder.is_dir() else directory
    if not os.access(where, os.W_OK) or not os.access(directory, os.W_OK):
        logger.warning(
            "learning is off: %s is not writable by this service (TELL is refused with 73 and nothing "
            "is retrained; with systemd, see the README's drop-in for learning)",
            where,
        )


def _octal_mode(_context: click.Context, _param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an octal mode such as 0660") from None
    if not 0 <= mode <= 0o777:
        raise click.BadParameter(f"{value!r} is not a mode between 0000 and 0777")
    return mode


def _finite(value: float, name: str) -> float:
    if value != value:  # NaN passes every range check
        raise click.BadParameter(f"{name} must be a number of seconds", param_hint=name)
    return value


@cli.command(context_settings=CONTEXT)
@model_option
@click.option(
    "-l",
    "--listen",
    "listen",
    multiple=True,
    metavar="ADDR",
    help="HOST:PORT, [IPv6]:PORT or unix:PATH; repeatable. Default: 127.0.0.1:11783 (783 needs root).",
)
@click.option(
    "--milter",
    "milter",
    multiple=True,
    metavar="ADDR",
    help="Also (or only) speak the milter protocol here, for Postfix and Sendmail: HOST:PORT or unix:PATH.",
)
@click.option(
    "--reject-above",
    type=float,
    default=None,
    metavar="SCORE",
    help="Milter: refuse mail scoring at or above this (SpamAssassin's scale, 5.0-10.0: 5.0 is the "
    "model's threshold) with a 550 during SMTP.",
)
@click.option(
    "--quarantine-above",
    type=float,
    default=None,
    metavar="SCORE",
    help="Milter: put mail scoring at or above this (5.0-10.0) in the MTA's quarantine (hold queue).",
)
@choice_option(
    "--milter-error",
    ("accept", "tempfail"),
    "accept",
    "Milter: what the MTA is told when a message cannot be classified (accept it untagged, or 4xx).",
)
@gpu_option
@variant_option
@threshold_option
@header_prefix_option
@click.option(
    "--batch-max",
    type=click.IntRange(1),
    default=None,
    help=f"Most messages per model call. Default: {ServiceSettings.batch_max}, with --gpu {GPU_BATCH_MAX}.",
)
@click.option(
    "--batch-wait-ms",
    type=FiniteFloatRange(0),
    default=ServiceSettings.batch_wait * 1000,
    show_default=True,
    help="How long a batch waits for more messages once its first has come.",
)
@count_option(
    "--max-size",
    ServiceSettings.max_size,
    "Largest message in bytes (spamc's -s default); larger ones get an error reply and spamc "
    "delivers them untagged.",
)
@click.option(
    "--timeout",
    type=FiniteFloatRange(0.1),
    default=ServiceSettings.timeout,
    show_default=True,
    help="Seconds a client has to send its whole request, and to take its reply.",
)
@count_option("--max-connections", ServiceSettings.max_connections)
@click.option(
    "--max-per-peer",
    type=click.IntRange(1),
    default=None,
    help="Connections one peer may have served at once: a local user (by uid, over a unix socket "
    "or loopback TCP) or a remote address (IPv6: its /64). "
    "Default: three quarters of --max-connections.",
)
@click.option(
    "-A",
    "--allow",
    multiple=True,
    metavar="NETS",
    help="Client addresses or networks allowed over TCP (comma-separated, repeatable). Default: loopback.",
)
@click.option("--socket-mode", callback=_octal_mode, default=None, help="Mode of unix sockets, e.g. 0660.")
@click.option("--socket-owner", default=None, metavar="USER[:GROUP]", help="Owner of unix sockets.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None)
@click.option(
    "--tls-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="With --tls-cert: TCP listeners speak TLS (spamc -S).",
)
@click.option(
    "--metrics", default=None, metavar="HOST:PORT", help="Serve Prometheus /metrics and /health here."
)
@click.option(
    "--syslog",
    "syslog_address",
    is_flag=False,
    flag_value="/dev/log",
    default=None,
    metavar="[SOCKET|HOST:PORT]",
    help="Also log to syslog, facility mail (default socket /dev/log).",
)
@click.option(
    "--log-interval",
    type=FiniteFloatRange(0),
    default=ServiceSettings.log_interval,
    help="Log a summary every this many seconds instead of one line per request.",
)
@click.option(
    "--allow-tell",
    is_flag=True,
    help="Accept TELL (spamc -L spam|ham|forget): file the message under the model's corrections/.",
)
@click.option(
    "--tell-allow",
    multiple=True,
    metavar="NETS",
    help="With --allow-tell: TCP clients that may TELL (comma-separated, repeatable). Default: loopback.",
)
@click.option(
    "--tell-users",
    multiple=True,
    metavar="NAMES",
    help="With --allow-tell: users (or @groups) that may TELL over a unix socket, by the peer's "
    "uid/gid (comma-separated, repeatable). Default: the service's own user and root.",
)
@count_option(
    "--tell-max",
    TELL_QUOTA.count,
    "Corrections one teacher (client address, or uid on a unix socket) may keep stored; "
    "beyond, TELL is refused with 73.",
)
@count_option("--tell-max-bytes", TELL_QUOTA.bytes, "Bytes of corrections one teacher may keep stored.")
@count_option(
    "--learn-after",
    50,
    "With --allow-tell: retrain (spamfilter learn --retrain) once this many corrections wait, and "
    "load the result; 0: never (run spamfilter learn --retrain yourself, e.g. from cron).",
    minimum=0,
)
@click.option(
    "--retrain-interval",
    type=FiniteFloatRange(min=0, max=86_400 * 365),  # NaN is refused by the callback
    callback=lambda _context, _param, value: _finite(value, "--retrain-interval"),
    default=RETRAIN_INTERVAL,
    show_default=True,
    metavar="SECONDS",
    help="With --allow-tell: at least this long between two retrains of the shared model, and "
    "between two of one user's head (--per-user); a retrain due sooner runs once it has passed.",
)
@explain_option(
    "Explain verdicts (spam ones, or all): the phrases that moved P(spam) most, in the tagged "
    "message's Report field (PROCESS, the milter) and REPORT's body (spamc -R). Each explained "
    "message costs tens of times its classification."
)
@click.option(
    "--per-user",
    is_flag=True,
    help="Per-user heads: spamd's User: (spamc -u NAME; spamc sends its caller's login by default) "
    "and the milter's recipient (when a message has exactly one) choose the user whose head scores "
    "the message, if they have one; with --allow-tell, a TELL teaches that user's head only.",
)
@count_option(
    "--max-users",
    UserLimits.max_users,
    "With --per-user: users who may have a head or corrections; a new one beyond is refused (73).",
)
@count_option(
    "--max-user-corrections",
    UserLimits.max_corrections,
    "With --per-user: corrections one user may keep; beyond, their TELL is refused (73).",
)
@count_option(
    "--max-user-correction-bytes",
    UserLimits.max_correction_bytes,
    "With --per-user: bytes of corrections one user may keep; beyond, their TELL is refused (73).",
)
@count_option(
    "--max-loaded-heads",
    UserLimits.max_loaded,
    "With --per-user: user heads held in memory (the least recently used are read again).",
)
@count_option(
    "--max-retrains",
    UserLimits.max_retrains,
    "With --per-user: user-head retrains run at once (each a thread, with a copy of the training features).",
)
@count_option(
    "--retrain-queue",
    UserLimits.retrain_queue,
    "With --per-user: users waiting for a retrain of their head; beyond, a user's retrain waits for "
    "their next TELL.",
    minimum=0,
)
def serve(
    model: Path | None,
    listen: tuple[str, ...],
    milter: tuple[str, ...],
    reject_above: float | None,
    quarantine_above: float | None,
    milter_error: str,
    gpu: bool,
    variant: str | None,
    threshold: float | None,
    header_prefix: str,
    batch_max: int | None,
    batch_wait_ms: float,
    max_size: int,
    timeout: float,
    max_connections: int,
    max_per_peer: int | None,
    allow: tuple[str, ...],
    socket_mode: int | None,
    socket_owner: str | None,
    tls_cert: Path | None,
    tls_key: Path | None,
    metrics: str | None,
    syslog_address: str | None,
    log_interval: float,
    allow_tell: bool,
    tell_allow: tuple[str, ...],
    tell_users: tuple[str, ...],
    tell_max: int,
    tell_max_bytes: int,
    learn_after: int,
    retrain_interval: float,
    explain: str,
    per_user: bool,
    max_users: int,
    max_user_corrections: int,
    max_user_correction_bytes: int,
    max_loaded_heads: int,
    max_retrains: int,
    retrain_queue: int,
) -> None:
    """Serve the model to spamd clients (spamc, Exim's spam condition, ...) and milter MTAs until
    SIGTERM.

    Speaks spamd's protocol: PROCESS returns the message as `filter` tags it; CHECK and friends
    report the score on SpamAssassin's scale, the threshold reading 5.0 (10 x P at threshold 0.5).
    Concurrent messages are classified together. SIGHUP reloads the model directory (a broken one
    is refused).
    """
    from ..corrections import Quota
    from ..service.access import DEFAULT_LISTEN, parse_address, parse_networks, parse_users, tls_context
    from ..service.milter import MilterPolicy
    from ..service.observe import setup_logging
    from ..service.server import serve as run_service
    from ..verdict import Decision

    directory = model or default_model_dir()
    # A reload asked for while the model loads would otherwise kill the process (SIGHUP's default).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with _library_errors():
        tell_uids, tell_gids = parse_users(tell_users)
        settings = ServiceSettings(
            # The spamd listener by default, unless only milter listeners are asked for.
            listen=[parse_address(text) for text in (listen or (() if milter else (DEFAULT_LISTEN,)))],
            milter=[parse_address(text, "--milter") for text in milter],
            milter_policy=MilterPolicy(milter_error),
            allow=parse_networks(allow),
            max_size=max_size,
            timeout=timeout,
            max_connections=max_connections,
            max_per_peer=max_per_peer or 0,
            batch_max=batch_max or (GPU_BATCH_MAX if gpu else ServiceSettings.batch_max),
            batch_wait=batch_wait_ms / 1000,
            decision=Decision(
                threshold=threshold,
                header_prefix=header_prefix,
                reject_above=reject_above,
                quarantine_above=quarantine_above,
                explain=explain,
            ),
            socket_mode=socket_mode,
            socket_owner=socket_owner,
            tls=tls_context(tls_cert, tls_key),
            metrics=parse_address(metrics, "--metrics", tcp_only=True) if metrics else None,
            log_interval=log_interval,
            model_name=str(directory),
            corrections=directory if allow_tell else None,
            learn_after=learn_after if allow_tell else 0,
            retrain_interval=retrain_interval,
            tell_allow=parse_networks(tell_allow, "--tell-allow"),
            tell_quota=Quota(tell_max, tell_max_bytes),
            tell_uids=tell_uids,
            tell_gids=tell_gids,
            learn_command=[sys.executable, "-m", "spamfilter", "learn", "--retrain", "-m", str(directory)],
            user_heads=directory if per_user else None,
            user_limits=UserLimits(
                max_users=max_users,
                max_loaded=max_loaded_heads,
                max_corrections=max_user_corrections,
                max_correction_bytes=max_user_correction_bytes,
                max_retrains=max_retrains,
                retrain_queue=retrain_queue,
                retrain_interval=retrain_interval,
            ),
        )
        logger = setup_logging(syslog_address)
        if allow_tell:
            _say_if_read_only(directory, logger)

        def load() -> Classifier:
            from ..runtime import Classifier

            return Classifier.load(
                directory, gpu=gpu, variant=variant, batch_size=settings.batch_max, warn=logger.warning
            )

        def loaded(scorer: Classifier) -> None:
            logger.info("model %s: %s on %s", directory, scorer.variant, scorer.provider)
            warning = scorer.directory.manifest.mail_warning()
            if warning is not None:
                logger.warning(warning)

        # The listeners are bound first, so that a busy port fails before the model loads.
        run_service(settings, None, load, logger, loaded)  # type: ignore[arg-type]
