"""filter --engine ray on a real local Ray (2 CPUs, started once for this module): the outputs are
the local engine's, byte for byte, over several mailboxes and formats; a scoring worker killed in
the middle is replaced and the output stays complete; a corrupt input is named while the others
finish; an interrupted run resumes where it stopped; and the local engine never imports ray."""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import ray
from click.testing import CliRunner
from conftest import SHARED_DATA
from ray import cloudpickle

from spamfilter.cli import cli
from spamfilter.engines import chunks
from spamfilter.engines.ray import ChunkScorer, Cluster, filter_with_ray, scoring_options
from spamfilter.errors import UsageError
from spamfilter.mail import split_mbox
from spamfilter.pipeline import CHUNK

PROJECT = Path(__file__).resolve().parents[1]
CORPUS = SHARED_DATA / "spamassassin"
SAMPLE = PROJECT / "examples" / "sample.mbox"
SMS_WARNING = "this model was trained on SMS messages"


@pytest.fixture(scope="module", autouse=True)
def local_ray() -> Iterator[None]:
    """One embedded Ray for the module (its start costs seconds); the engine joins it. This module
    travels to the workers by value, for the scoring worker that kills itself."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()
    cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def _messages(path: Path) -> list[bytes]:
    with path.open("rb") as stream:
        return list(split_mbox(stream))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, test_csv: Path) -> list[Path]:
    """Every kind of input, several of them over one chunk: mboxes (one with CRLF line ends), a
    Maildir, a folder of .eml files, a CSV, one message."""
    root = tmp_path_factory.mktemp("inputs")
    ham = _messages(CORPUS / "easy_ham.mbox")
    crlf = b"".join(message.replace(b"\n", b"\r\n") for message in ham[:40])
    (root / "crlf.mbox").write_bytes(crlf)
    maildir = root / "maildir"
    for folder in ("cur", "new", "tmp"):
        (maildir / folder).mkdir(parents=True)
    for i, message in enumerate(ham[40:340]):  # 300 files: two chunks
        subfolder = "cur" if i % 3 else "new"
        (maildir / subfolder / f"{1700000000 + i}.M{i}P7.host:2,S").write_bytes(message.split(b"\n", 1)[1])
    emls = root / "emls"
    emls.mkdir()
    for i, message in enumerate(_messages(CORPUS / "hard_ham.mbox")[:30]):
        (emls / f"{i:03d}.eml").write_bytes(message.split(b"\n", 1)[1])
    # a name that is not UTF-8: the local engine copied it, the Ray engine failed the whole folder
    (emls / os.fsdecode(b"030.bad\xff\xfe.eml")).write_bytes(
        _messages(CORPUS / "hard_ham.mbox")[30].split(b"\n", 1)[1]
    )
    (root / "one.eml").write_bytes(ham[400].split(b"\n", 1)[1])
    return [CORPUS / "spam.mbox", root / "crlf.mbox", SAMPLE, maildir, emls, test_csv, root / "one.eml"]


def _local_engine(model: Path, source: Path, target: Path, *extra: str) -> None:
    args = ["filter", "-q", "-m", str(model), str(source), "-o", str(target), *extra]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output


def _assert_same_as_local(model: Path, sources: list[Path], out: Path, tmp_path: Path, *extra: str) -> None:
    for source in sources:
        expected = tmp_path / "local" / source.name
        expected.parent.mkdir(exist_ok=True)
        _local_engine(model, source, expected, *extra)
        produced = out / source.name
        if source.is_dir():
            files = sorted(p.relative_to(expected) for p in expected.rglob("*") if p.is_file())
            assert files == sorted(p.relative_to(produced) for p in produced.rglob("*") if p.is_file())
            for relative in files:
                assert (produced / relative).read_bytes() == (expected / relative).read_bytes(), relative
        else:
            assert produced.read_bytes() == expected.read_bytes(), source.name


def _ray_cli(model: Path, sources: list[Path], out: Path, *extra: str):
    args = ["filter", "--engine", "ray", "-m", str(model), *map(str, sources), "-o", str(out), *extra]
    return CliRunner().invoke(cli, args)


def test_outputs_are_the_local_engines_byte_for_byte(
    trained_model: Path, inputs: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = _ray_cli(trained_model, inputs, out)
    assert result.exit_code == 0, result.output
    _assert_same_as_local(trained_model, inputs, out, tmp_path)
    assert f"ray: {len(inputs)} inputs: {len(inputs)} filtered" in result.stderr
    assert result.stderr.count(SMS_WARNING) == 1, "the domain guard, once per run over mail"

    table = pq.read_table(out / "verdicts.parquet").to_pylist()
    by_source = {str(source): [row for row in table if row["source"] == str(source)] for source in inputs}
    assert len(by_source[str(SAMPLE)]) == 10 and len(by_source[str(inputs[0])]) == 500
    assert [row["position"] for row in by_source[str(inputs[0])]] == list(range(500))
    # the table says what the outputs say: the CSV's own column, the mbox's headers
    csv_rows = list(csv.DictReader(io.StringIO((out / inputs[5].name).read_text("utf-8"))))
    assert [f"{row['spam_probability']:.6f}" for row in by_source[str(inputs[5])]] == [
        row["spamfilter_spam_probability"]
        for row in csv_rows  # the input has its own Label column
    ]
    flags = [b"\nX-Spam-Flag: YES" in message for message in _messages(out / "sample.mbox")]
    assert [row["label"] == "spam" for row in by_source[str(SAMPLE)]] == flags
    first_id = by_source[str(SAMPLE)][0]["message_id"]
    assert first_id and first_id.encode() in _messages(SAMPLE)[0]
    maildir_paths = [row["path"] for row in by_source[str(inputs[3])]]
    assert len(maildir_paths) == 300 and maildir_paths[0].startswith("cur/")
    assert "030.bad\\xff\\xfe.eml" in [row["path"] for row in by_source[str(inputs[4])]]


class KilledOnce(ChunkScorer):
    """A scoring worker whose process dies in its first call, as one killed by the OOM killer or a
    lost node would: the marker file says it happened, so the worker Ray starts in its place lives."""

    marker = ""

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        marker = Path(self.marker)
        if not marker.exists():
            marker.write_text("killed\n")
            import os

            os._exit(1)
        return super().__call__(batch)


def test_a_killed_worker_is_replaced_and_the_output_stays_complete(
    trained_model: Path, tmp_path: Path
) -> None:
    """On an mbox that starts with bytes that are not a message (they count in the first chunk, as in
    the local engine; --format mbox, as auto takes it for text)."""
    KilledOnce.marker = str(tmp_path / "killed")
    source = tmp_path / "preamble.mbox"
    source.write_bytes(b"not a message\n\n" + (CORPUS / "spam.mbox").read_bytes())
    out = tmp_path / "out"
    run = filter_with_ray(
        [str(source)], out, trained_model, input_format="mbox", scorer=KilledOnce, report=lambda line: None
    )
    assert (tmp_path / "killed").exists(), "the worker was never killed: the test proves nothing"
    assert run.complete == ["preamble.mbox"] and not run.failed and run.messages == 500
    _assert_same_as_local(trained_model, [source], out, tmp_path, "--format", "mbox")


def test_a_corrupt_input_is_named_while_the_others_finish(trained_model: Path, tmp_path: Path) -> None:
    binary = tmp_path / "attachment.bin"
    binary.write_bytes(b"\x00\x01PK\x03\x04" * 100)
    no_column = tmp_path / "contacts.csv"
    no_column.write_text("Name,Email\nann,ann@example.org\n", encoding="utf-8")
    not_mail = tmp_path / "notes"
    not_mail.mkdir()
    (not_mail / "todo.txt").write_text("buy milk\n")
    missing = tmp_path / "gone.mbox"
    out = tmp_path / "out"
    result = _ray_cli(trained_model, [binary, SAMPLE, no_column, not_mail, missing], out)
    assert result.exit_code == 65, result.output
    for bad in (binary, no_column, not_mail, missing):
        assert str(bad) in result.stderr
        assert not (out / bad.name).exists()
    assert "4 of 5 inputs failed" in result.stderr and "Traceback" not in result.output
    _assert_same_as_local(trained_model, [SAMPLE], out, tmp_path)
    assert {row["source"] for row in pq.read_table(out / "verdicts.parquet").to_pylist()} == {str(SAMPLE)}


def test_an_interrupted_run_resumes_and_skips_complete_inputs(trained_model: Path, tmp_path: Path) -> None:
    sources = [SAMPLE, CORPUS / "hard_ham.mbox"]
    out = tmp_path / "out"

    def stop(name: str) -> None:
        raise KeyboardInterrupt  # as Ctrl-C would, right after the first input is complete

    with pytest.raises(KeyboardInterrupt):
        filter_with_ray(
            list(map(str, sources)), out, trained_model, report=lambda line: None, on_complete=stop
        )
    finished = [source for source in sources if (out / source.name).exists()]
    assert len(finished) == 1, "an output appears only whole, and only the first input was complete"
    unfinished = next(source for source in sources if source not in finished)
    stamp = (out / finished[0].name).stat().st_mtime_ns

    result = _ray_cli(trained_model, sources, out)
    assert result.exit_code == 0, result.output
    assert f"{finished[0]}: already complete" in result.stderr
    assert f"{unfinished}: " in result.stderr and "1 already complete (skipped)" in result.stderr
    assert (out / finished[0].name).stat().st_mtime_ns == stamp
    _assert_same_as_local(trained_model, sources, out, tmp_path)
    assert len(pq.read_table(out / "verdicts.parquet")) == 10 + 250
    assert not any((out / ".spamfilter-ray").glob("*.mbox")), "no work left behind"

    # Another threshold makes other outputs: nothing is skipped then.
    rerun = _ray_cli(trained_model, sources, out, "--threshold", "0.9")
    assert rerun.exit_code == 0 and "skipped" not in rerun.stderr, rerun.output


def test_usage_errors_are_one_line_and_exit_2(trained_model: Path, tmp_path: Path) -> None:
    model = ["-m", str(trained_model)]
    cases = [
        (["--engine", "ray", str(SAMPLE)], "needs -o DIR"),
        (["--engine", "ray", "-", "-o", str(tmp_path)], "not stdin"),
        (["--engine", "ray", str(SAMPLE), "-o", str(tmp_path), "--gpu"], "use --gpus-per-worker"),
        (["--engine", "ray", str(SAMPLE), "-o", str(tmp_path), "--format", "text"], "mbox, email and csv"),
        (["--engine", "ray", str(SAMPLE), str(SAMPLE), "-o", str(tmp_path)], "several inputs would write"),
        (["--engine", "ray", str(SAMPLE), "-o", str(SAMPLE.parent)], "would overwrite or sit inside"),
        (["--engine", "ray", f"file://{tmp_path}/..", "-o", str(tmp_path)], "'..' cannot name its output"),
        (["--engine", "ray", "/", "-o", str(tmp_path)], "'/' cannot name its output"),
        ([str(SAMPLE), str(SAMPLE)], "several INPUTs need --engine ray"),
        ([str(SAMPLE), "--workers", "2"], "--workers goes with --engine ray"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, ["filter", *model, *args])
        assert result.exit_code == 2 and message in result.stderr, (args, result.output)
        assert "Traceback" not in result.output


def test_gpu_options_reach_the_worker_pool(trained_model: Path, tmp_path: Path) -> None:
    """No GPU here: this checks only the plumbing. --gpus-per-worker becomes each scoring worker's
    num_gpus (and CUDA in its session); on a Ray without GPUs the run is refused up front rather
    than left waiting for a GPU that will never come."""
    options = scoring_options(
        Cluster(workers=3, gpus_per_worker=0.5, cpus_per_worker=2), model_bytes=10 << 20
    )
    assert options["num_gpus"] == 0.5 and options["num_cpus"] == 2 and options["compute"].min_size == 3
    assert scoring_options(Cluster(), model_bytes=0)["num_gpus"] is None
    result = _ray_cli(trained_model, [SAMPLE], tmp_path / "out", "--gpus-per-worker", "1")
    assert result.exit_code == 1 and "Ray finds 0 GPUs here" in result.stderr, result.output


def test_chunks_are_the_local_engines_chunks(tmp_path: Path) -> None:
    """Without Ray: an mbox's chunks are CHUNK items each (bytes before the first From_ line count
    as one, as in the local engine), cover the file exactly, and count its messages."""
    data = b"not a message\n\n" + SAMPLE.read_bytes() * 60  # 601 items
    path = tmp_path / "big.mbox"
    path.write_bytes(data)
    planned = list(chunks.plan(0, chunks.Input(str(path), path.name, "mbox"), "Text"))
    assert [c.count for c in planned] == [CHUNK, CHUNK, 601 - 2 * CHUNK]
    assert [c.last for c in planned] == [False, False, True]
    assert [c.first_message for c in planned] == [0, CHUNK - 1, 2 * CHUNK - 1]
    assert [c.offset for c in planned[1:]] == [c.offset + c.length for c in planned[:-1]]
    assert planned[-1].offset + planned[-1].length == len(data)


def test_the_local_engine_and_the_service_never_import_ray(trained_model: Path, tmp_path: Path) -> None:
    code = f"""
import sys
from click.testing import CliRunner
from spamfilter.cli import cli
for args in (["{SAMPLE}"], ["{CORPUS / "spam.mbox"}", "-o", "{tmp_path / "out.mbox"}"]):
    result = CliRunner().invoke(cli, ["filter", "-q", "-m", "{trained_model}", *args])
    assert result.exit_code == 0, result.output
import spamfilter.service.server, spamfilter.service.milter
print(sorted(name for name in sys.modules if name.split(".")[0] == "ray"))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_what_the_engine_did_not_write_is_never_replaced(trained_model: Path, tmp_path: Path) -> None:
    """`filter --engine ray /backup/Maildir -o ~` must not touch ~/Maildir: an output name taken by
    a folder or a file the engine has no record of writing is a usage error, before anything is
    written. What its records say it wrote is replaced, a folder by a file too."""
    home = tmp_path / "home"
    (home / "Maildir" / "cur").mkdir(parents=True)
    (home / "Maildir" / "cur" / "mine").write_bytes(b"Subject: keep me\n\nhello\n")
    (home / "sample.mbox").write_bytes(b"my own mbox\n")
    backup = tmp_path / "backup" / "Maildir"
    for folder in ("cur", "new"):
        (backup / folder).mkdir(parents=True)
    (backup / "cur" / "1.eml").write_bytes(_messages(SAMPLE)[0].split(b"\n", 1)[1])
    a_file = tmp_path / "files" / "Maildir"  # a file input named as an existing folder
    a_file.parent.mkdir()
    a_file.write_bytes(SAMPLE.read_bytes())
    before = sorted((p, p.read_bytes() if p.is_file() else None) for p in home.rglob("*"))
    for source in (backup, SAMPLE, a_file):
        result = _ray_cli(trained_model, [source], home)
        assert result.exit_code == 2, result.output
        assert f"{home / source.name} exists and is no output of --engine ray" in result.stderr
        assert "Traceback" not in result.output
    assert sorted((p, p.read_bytes() if p.is_file() else None) for p in home.rglob("*")) == before
    assert not (home / ".spamfilter-ray").exists() and not (home / "verdicts.parquet").exists()

    # The engine's own output: a folder, then a file of the same name over it, then a folder again.
    out = tmp_path / "out"
    for attempt, source in enumerate((backup, a_file, backup)):
        result = _ray_cli(trained_model, [source], out)
        assert result.exit_code == 0, result.output
        assert (out / "Maildir").is_dir() == source.is_dir()
        (tmp_path / f"run{attempt}").mkdir()
        _assert_same_as_local(trained_model, [source], out, tmp_path / f"run{attempt}")
    assert not any((out / ".spamfilter-ray").glob("Maildir*")), "no work left behind"


def test_an_empty_maildir_is_filtered_into_an_empty_folder(trained_model: Path, tmp_path: Path) -> None:
    """Nothing in cur/ and new/: the input is complete (an empty folder; the local engine writes no
    message and succeeds), counted, and skipped by a rerun; it was once never completed nor failed."""
    empty = tmp_path / "empty"
    for folder in ("cur", "new", "tmp"):
        (empty / folder).mkdir(parents=True)
    out = tmp_path / "out"
    result = _ray_cli(trained_model, [empty, SAMPLE], out)
    assert result.exit_code == 0, result.output
    assert "ray: 2 inputs: 2 filtered" in result.stderr
    assert (out / "empty").is_dir() and not any((out / "empty").iterdir())
    assert {row["source"] for row in pq.read_table(out / "verdicts.parquet").to_pylist()} == {str(SAMPLE)}
    rerun = _ray_cli(trained_model, [empty], out)
    assert rerun.exit_code == 0 and f"{empty}: already complete" in rerun.stderr, rerun.output


def test_an_input_named_like_the_engines_own_folders(trained_model: Path, tmp_path: Path) -> None:
    """An input called ``done`` once had its working folder where the completion records live."""
    named = tmp_path / "in"
    named.mkdir()
    (named / "done").write_bytes(SAMPLE.read_bytes())
    (named / "inputs").write_bytes(SAMPLE.read_bytes())
    first = _ray_cli(trained_model, [named / "done", named / "inputs"], tmp_path / "out")
    assert first.exit_code == 0, first.output
    _assert_same_as_local(trained_model, [named / "done", named / "inputs"], tmp_path / "out", tmp_path)
    rerun = _ray_cli(trained_model, [named / "done", named / "inputs"], tmp_path / "out")
    assert rerun.exit_code == 0 and rerun.stderr.count(": already complete in") == 2, rerun.output


def test_a_linked_input_keeps_its_own_name(trained_model: Path, tmp_path: Path) -> None:
    """``inbox.mbox -> archive/2019.mbox``: the output and the verdicts say inbox.mbox, as given."""
    link = tmp_path / "inbox.mbox"
    link.symlink_to(SAMPLE)
    result = _ray_cli(trained_model, [link], tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "inbox.mbox").is_file() and not (tmp_path / "out" / SAMPLE.name).exists()
    sources = {row["source"] for row in pq.read_table(tmp_path / "out" / "verdicts.parquet").to_pylist()}
    assert sources == {str(link)}


class KillsEveryWorker(ChunkScorer):
    """The first input's chunks kill whichever worker scores them (a message that crashes the model
    runtime, or needs more memory than a worker has)."""

    def score_chunk(self, chunk):  # type: ignore[no-untyped-def]
        if chunk.input == 0:
            import os

            os._exit(1)
        super().score_chunk(chunk)


def test_a_chunk_that_kills_every_worker_fails_its_input_only(trained_model: Path, tmp_path: Path) -> None:
    """Retried a few times, not for ever (Ray Data's default); then that input is named as failed
    and the others are complete."""
    poison = tmp_path / "poison.mbox"
    poison.write_bytes(SAMPLE.read_bytes())
    out = tmp_path / "out"
    lines: list[str] = []
    run = filter_with_ray(
        [str(poison), str(SAMPLE)], out, trained_model, scorer=KillsEveryWorker, report=lines.append
    )
    assert list(run.failed) == [str(poison)] and run.complete == [SAMPLE.name], lines
    assert "scoring workers died on it" in run.failed[str(poison)]
    assert any(line.startswith(f"{poison}: ") for line in lines)
    assert (
        not (out / poison.name).exists()
        and not (out / ".spamfilter-ray" / "done" / "poison.mbox.json").exists()
    )
    _assert_same_as_local(trained_model, [SAMPLE], out, tmp_path)
    options = scoring_options(Cluster(), model_bytes=0)
    assert 0 < options["max_restarts"] < 10 and 0 < options["max_task_retries"] < 10


def test_output_names_are_names() -> None:
    for source in ("s3://bucket/..", "s3://bucket/.", "s3://", "/", "gs://b/x/../"):
        with pytest.raises(UsageError):
            chunks.output_name(source)
    assert chunks.output_name("s3://bucket/mail/inbox.mbox") == "inbox.mbox"
    assert chunks.output_name("s3://bucket/Maildir/") == "Maildir"


def test_the_domain_guard_warns_once_for_mail_only(
    trained_model: Path, tmp_path: Path, test_csv: Path
) -> None:
    """Refused before Ray's workers start (no GPU here), after the guard has spoken."""
    gpu = ("--gpus-per-worker", "1")
    for sources, extra, warned in (
        ([SAMPLE], gpu, True),
        ([test_csv], gpu, False),
        ([SAMPLE], (*gpu, "-q"), False),
    ):
        result = _ray_cli(trained_model, sources, tmp_path / "out", *extra)
        assert result.exit_code == 1, result.output
        assert result.stderr.count(SMS_WARNING) == int(warned), (sources, extra, result.stderr)


def test_a_stop_signal_ends_a_waiting_run_at_once(trained_model: Path, tmp_path: Path) -> None:
    """Ctrl-C while the run waits for a chunk that does not come (here: workers waiting for GPUs a
    cluster may yet get): the run stops within seconds, exit 130, not when the next chunk arrives."""
    address = ray.get_runtime_context().gcs_address
    spamfilter = Path(sys.executable).parent / "spamfilter"
    args = [str(spamfilter), "filter", "--engine", "ray", "-m", str(trained_model), str(SAMPLE)]
    args += ["-o", str(tmp_path / "out"), "--ray-address", address, "--gpus-per-worker", "1"]
    process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        seen = []
        for line in process.stderr:
            seen.append(line)
            if "the workers wait for GPU nodes to join" in line:
                break
        else:
            pytest.fail("".join(seen))
        time.sleep(3)  # into the wait for the first chunk
        assert process.poll() is None
        sent = time.monotonic()
        process.send_signal(signal.SIGINT)
        rest = process.communicate(timeout=60)[1]
        stopped = time.monotonic() - sent
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 130, "".join(seen) + rest
    assert stopped < 20, stopped
    assert "ray: 1 inputs: 0 filtered" in rest and "Traceback" not in rest


def _snapshot(folder: Path) -> list[tuple[str, bytes | None]]:
    return sorted((str(p), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))


def test_no_link_inside_the_output_folder_is_followed(trained_model: Path, tmp_path: Path) -> None:
    """A link planted where the engine writes or removes (its working folder, a folder inside it,
    the verdict table) is refused before anything is written: what it points to stays as it was."""
    victim = tmp_path / "victim"
    (victim / "done").mkdir(parents=True)
    (victim / "sample.mbox").mkdir()  # where a planted inputs/ link would send the input's rmtree
    (victim / "sample.mbox" / "precious").write_bytes(b"keep me\n")
    (victim / "done" / "sample.mbox.json").write_bytes(b"keep me too\n")
    (victim / "verdicts.parquet").write_bytes(b"not a table\n")
    before = _snapshot(victim)
    plants = {
        ".spamfilter-ray": victim,
        ".spamfilter-ray/inputs": victim,
        ".spamfilter-ray/done/sample.mbox.json": victim / "done" / "sample.mbox.json",
        "verdicts.parquet": victim / "verdicts.parquet",
    }
    for planted, target in plants.items():
        out = tmp_path / f"out-{len(planted)}"
        link = out / planted
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        result = _ray_cli(trained_model, [SAMPLE], out)
        assert result.exit_code == 2, (planted, result.output)
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and f"{link} is a symbolic link" in errors[0], result.output
        assert "Traceback" not in result.output
        assert _snapshot(victim) == before, planted
        assert not (out / "sample.mbox").exists()


def test_an_input_reached_through_a_link_is_checked_where_it_is(trained_model: Path, tmp_path: Path) -> None:
    """-o inside an input folder is refused whether the folder is named by its path or by a link."""
    maildir = tmp_path / "real" / "Maildir"
    for folder in ("cur", "new"):
        (maildir / folder).mkdir(parents=True)
    (maildir / "cur" / "1.eml").write_bytes(_messages(SAMPLE)[0].split(b"\n", 1)[1])
    link = tmp_path / "linked"
    link.symlink_to(maildir)
    before = _snapshot(maildir)
    for source in (maildir, link):
        result = _ray_cli(trained_model, [source], maildir / "out")
        assert result.exit_code == 2, (source, result.output)
        assert "would overwrite or sit inside the input" in result.stderr, result.output
    assert _snapshot(maildir) == before
