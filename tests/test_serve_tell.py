"""TELL: spamc -L spam|ham|forget files corrections with the served model, and enough of them start
a retrain that the service loads. Real spamc (Debian's package, installed by .ci/run) and aiospamc."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aiospamc
import pytest
from conftest import make_email
from support import require_tool
from support.corpus import email_false_positive
from support.spamd_server import Server

from spamfilter.corrections import CORRECTIONS_DIR, Corrections
from spamfilter.labelled import message_key

MESSAGE = make_email("meeting notes", "The notes from Tuesday's meeting are attached, see you Friday.")


def spamc_learn(server: Server, message: bytes, what: str) -> subprocess.CompletedProcess:
    host, port = server.address
    spamc = require_tool("spamc", "spamc")
    return subprocess.run(
        [spamc, "-d", host, "-p", str(port), "-L", what], input=message, capture_output=True, timeout=60
    )


def _kept(model: Path) -> dict[str, int]:
    return {key: label for key, label, _ in Corrections(model)}


def test_spamc_learn_files_moves_and_forgets_a_message(model_copy: Path) -> None:
    key = message_key(MESSAGE).hex()
    with Server(model_copy, "--allow-tell", "--learn-after", "0") as server:
        learnt = spamc_learn(server, MESSAGE, "spam")
        assert learnt.returncode == 0, learnt.stderr
        assert b"Message successfully un/learned" in learnt.stdout
        assert _kept(model_copy) == {key: 1}
        again = spamc_learn(server, MESSAGE, "spam")
        assert b"Message was already un/learned" in again.stdout
        assert spamc_learn(server, MESSAGE, "ham").returncode == 0
        assert _kept(model_copy) == {key: 0}
        forgotten = spamc_learn(server, MESSAGE, "forget")
        assert b"Message successfully un/learned" in forgotten.stdout
        assert _kept(model_copy) == {}
        server.wait_for_log("tell: removed")  # the log line follows the reply
        assert "tell: spam" in server.log() and "tell: nothing new" in server.log()


def test_aiospamc_tell_reports_what_was_done(model_copy: Path) -> None:
    with Server(model_copy, "--allow-tell", "--learn-after", "0") as server:
        host, port = server.address

        async def talk() -> None:
            done = await aiospamc.tell(MESSAGE, "ham", set_action="local", host=host, port=port)
            assert done.headers["DidSet"].action.local is True
            remote = await aiospamc.tell(MESSAGE, "spam", set_action="remote", host=host, port=port)
            assert "DidSet" not in remote.headers  # no remote reporting here: nothing done, as spamd
            with pytest.raises(aiospamc.responses.ProtocolException):
                await aiospamc.tell(
                    MESSAGE, "ham", set_action="local", remove_action="local", host=host, port=port
                )

        asyncio.run(talk())
    assert _kept(model_copy) == {message_key(MESSAGE).hex(): 0}


def test_tell_is_refused_without_allow_tell(trained_model: Path) -> None:
    with Server(trained_model) as server:
        refused = spamc_learn(server, MESSAGE, "spam")
    assert refused.returncode != 0
    assert not (trained_model / CORRECTIONS_DIR).exists()


def test_enough_corrections_retrain_and_the_service_loads_the_result(model_copy: Path) -> None:
    wanted = email_false_positive(model_copy)
    with Server(model_copy, "--allow-tell", "--learn-after", "1") as server:
        spamc = require_tool("spamc", "spamc")
        host, port = server.address

        def check() -> int:
            return subprocess.run(
                [spamc, "-d", host, "-p", str(port), "-c"],
                input=wanted,
                capture_output=True,
                timeout=60,
            ).returncode

        assert check() == 1  # spam before the correction
        assert spamc_learn(server, wanted, "ham").returncode == 0
        server.wait_for_log("retrained:", timeout=300)
        server.wait_for_log("reloaded", timeout=60)
        assert check() == 0  # the served model now calls it ham
    assert Corrections(model_copy).pending() == 0


def test_a_correction_that_cannot_be_kept_gets_an_error_reply(model_copy: Path) -> None:
    (model_copy / CORRECTIONS_DIR).write_text("not a folder")  # root writes anywhere: this cannot be
    with Server(model_copy, "--allow-tell", "--learn-after", "0") as server:
        refused = spamc_learn(server, MESSAGE, "spam")
        server.wait_for_log("TELL: cannot keep the correction")
    assert refused.returncode != 0
    assert b"successfully" not in refused.stdout


def test_a_failed_retrain_is_not_retried_until_another_correction_comes(model_copy: Path) -> None:
    (model_copy / "learn.safetensors").unlink()  # every retrain of this model fails
    other = make_email("second", "Another message, filed as spam by the user.")
    with Server(model_copy, "--allow-tell", "--learn-after", "1", "--retrain-interval", "0") as server:
        assert spamc_learn(server, MESSAGE, "spam").returncode == 0
        server.wait_for_log("retrain exited 1", timeout=120)
        assert spamc_learn(server, MESSAGE, "spam").returncode == 0  # nothing new: no second attempt
        assert spamc_learn(server, other, "spam").returncode == 0  # a new one: try again
        server.wait_for_log("tell: spam", timeout=60)
        deadline = time.monotonic() + 120
        while server.log().count("retrain exited 1") < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        log = server.log()
    assert log.count("retraining on the corrections") == 2
    assert "learn.safetensors is missing" in log
