"""Changing a model directory as a whole, in one rename (no torch: ``spamfilter learn`` updates
the head in the base install through it; ``spamfilter export`` writes whole new models through it).

A model directory changes as a whole: the manifest names its model files (and its checkpoint), so
a new model's files are moved in under names the current manifest does not use (the plain names,
or the plain names with a generation tag: model.int8.g1f2e3d4c.onnx), and the new manifest then
replaces the old one with one rename. Until that rename the directory is the old model, after it
the new one; the old model's files are removed after it, or by the next update where a process
was killed first.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from dataclasses import replace
from pathlib import Path

from .errors import ModelDirectoryError
from .modeldir import CHECKPOINT_FILE, MANIFEST_FILE, ONNX_FILE, Manifest

STAGING_PREFIX = ".export-"  # + the exporting process's id: a staging folder of a live one is kept
GENERATED = re.compile(r"model(\.dynamic|\.int8)?(\.g[0-9a-f]{8})?\.onnx|model(\.g[0-9a-f]{8})?\.pt")


def readable_manifest(folder: Path) -> Manifest | None:
    """The manifest of ``folder`` where it has one that reads, else None."""
    try:
        data = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
        return Manifest.from_dict(data, folder / MANIFEST_FILE)
    except (OSError, ValueError, ModelDirectoryError):
        return None


def referenced_files(manifest: Manifest) -> set[str]:
    files = {manifest.onnx.file, *(variant.file for variant in manifest.variants.values())}
    return files | {manifest.checkpoint or CHECKPOINT_FILE}


def _tagged(name: str, tag: str | None) -> str:
    if tag is None:
        return name
    stem, suffix = name.rsplit(".", 1)
    return f"{stem}.g{tag}.{suffix}"


def update_model_directory(out: Path, staging: Path, built: Manifest, current: Manifest | None) -> Manifest:
    """Move the model in ``staging`` (files under their plain names, ``built`` naming them so)
    into ``out``, switching from ``current`` in one rename; returns the manifest written."""
    in_use = referenced_files(current) if current is not None else set()
    tag = secrets.token_hex(4) if in_use & {ONNX_FILE, CHECKPOINT_FILE} else None
    names = {
        path.name: _tagged(path.name, tag) if GENERATED.fullmatch(path.name) else path.name
        for path in staging.iterdir()
        if path.name != MANIFEST_FILE
    }
    final = replace(
        built,
        onnx=replace(built.onnx, file=names.get(built.onnx.file, built.onnx.file)),
        variants={
            key: replace(variant, file=names.get(variant.file, variant.file))
            for key, variant in built.variants.items()
        },
        checkpoint=names.get(CHECKPOINT_FILE, built.checkpoint),
    )
    for name, target in names.items():
        _fsync(staging / name)
        os.replace(staging / name, out / target)  # unused names, or files that are the same for both
    final.write(staging / MANIFEST_FILE)
    _fsync(staging / MANIFEST_FILE)
    _fsync(out)
    os.replace(staging / MANIFEST_FILE, out / MANIFEST_FILE)  # the switch
    _fsync(out)
    return final


def remove_leftovers(out: Path, manifest: Manifest | None) -> None:
    """Remove what earlier updates of ``out`` left: staging folders of processes that are gone, and
    model files that ``manifest`` (the directory's, where it reads) does not name. Only entries of
    our own naming, and only real folders and files: a link is never followed nor removed."""
    in_use = referenced_files(manifest) if manifest is not None else None
    for entry in os.scandir(out):
        if entry.name.startswith(STAGING_PREFIX) and entry.is_dir(follow_symlinks=False):
            if not _exporter_alive(entry.name):
                shutil.rmtree(entry.path, ignore_errors=True)
        elif (
            in_use is not None
            and GENERATED.fullmatch(entry.name)
            and entry.name not in in_use
            and entry.is_file(follow_symlinks=False)
        ):
            os.unlink(entry.path)


def _exporter_alive(name: str) -> bool:
    """Whether the process that made the staging folder ``name`` still runs (folders of older
    versions carry no process id: theirs are gone)."""
    pid = name[len(STAGING_PREFIX) :].split("-", 1)[0]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _fsync(path: Path) -> None:
    """On disk before what depends on it is renamed into place (a power cut, not only a kill)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
