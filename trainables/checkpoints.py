"""A trial's checkpoints in a store that can fail: each one says what it holds, and a restore
uses the newest checkpoint that is whole.

Ray Tune uploads a checkpoint file by file. A store that dies during the upload (or loses
its last writes when it is killed) can leave a checkpoint folder with a file missing or cut
short, which Ray may still restore from. So the trainable writes :data:`MANIFEST_FILE` into
every checkpoint (the name and size of each file, and the training iteration), and before a
restore :func:`newest_whole_checkpoint` checks the chosen checkpoint in the store against its
manifest, falling back to the trial's whole checkpoint of the highest iteration.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
CHECKPOINT_PREFIX = "checkpoint_"  # Ray Tune's checkpoint folders: checkpoint_000000, checkpoint_000001, ...


def write_manifest(folder: Path, iteration: int) -> None:
    """Record the name and size of every file in ``folder`` (a checkpoint about to be uploaded)."""
    files = {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST_FILE}
    (folder / MANIFEST_FILE).write_text(json.dumps({"iteration": iteration, "files": files}))


def manifest_problem(filesystem: Any, path: str, required: tuple[str, ...] = ()) -> str | None:
    """What is wrong with the checkpoint at ``path`` of a pyarrow ``filesystem`` (a file of its
    manifest missing or of another size), or None when it is whole. A checkpoint without a
    manifest (written before manifests, or whose manifest did not arrive) is whole when the
    files ``required`` are there: an object store keeps an object whole or not at all. Store
    errors propagate (the caller waits for the store)."""
    import pyarrow.fs

    found = {
        info.base_name: info.size
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(path, allow_not_found=True))
        if info.type == pyarrow.fs.FileType.File
    }
    if not found:
        return "it is empty or gone"
    if MANIFEST_FILE not in found:
        missing = [name for name in required if name not in found]
        return f"{missing[0]} is missing (and it has no {MANIFEST_FILE})" if missing else None
    try:
        with filesystem.open_input_stream(f"{path}/{MANIFEST_FILE}") as stream:
            manifest = json.loads(stream.read().decode())
    except json.JSONDecodeError:
        return f"its {MANIFEST_FILE} is cut short"
    for name, size in manifest["files"].items():
        if name not in found:
            return f"{name} is missing"
        if found[name] != size:
            return f"{name} has {found[name]:,} of its {size:,} bytes"
    return None


def manifest_iteration(filesystem: Any, path: str) -> int:
    """The training iteration recorded in the manifest of a whole checkpoint."""
    with filesystem.open_input_stream(f"{path}/{MANIFEST_FILE}") as stream:
        return int(json.loads(stream.read().decode())["iteration"])


def newest_whole_checkpoint(
    filesystem: Any, path: str, required: tuple[str, ...] = ()
) -> tuple[str | None, str | None]:
    """(the checkpoint to restore, what was wrong with ``path``): ``path`` itself when it is
    whole, else the trial's whole checkpoint (with a manifest) of the highest iteration; None
    when there is none. That is an earlier one when ``path`` was cut short, and a later one
    when ``path`` is gone: Ray Tune's saved state is only as new as its last save, and the
    trial has deleted older checkpoints since (``num_to_keep``)."""
    import pyarrow.fs

    problem = manifest_problem(filesystem, path, required)
    if problem is None:
        return path, None
    parent, name = path.rstrip("/").rsplit("/", 1)
    siblings = filesystem.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    whole = [
        (manifest_iteration(filesystem, info.path), info.path)
        for info in siblings
        if info.base_name.startswith(CHECKPOINT_PREFIX)
        and info.base_name != name
        and manifest_problem(filesystem, info.path, required=(MANIFEST_FILE,)) is None
    ]
    return (max(whole)[1] if whole else None), problem


def whole_result(result: Any, trial_id: str, required: tuple[str, ...], error_class: type[Exception]) -> Any:
    """``result`` (Ray's checkpoint and its metrics, what ``Trainable.restore`` takes) when its
    checkpoint is whole, else a result of the trial's whole checkpoint of the highest iteration, with one
    line; ``error_class`` (one line) when there is none."""
    from ray.train._internal.session import _TrainingResult

    checkpoint = result.checkpoint
    path, problem = newest_whole_checkpoint(checkpoint.filesystem, checkpoint.path, required)
    if problem is None:
        return result
    if path is None:
        raise error_class(
            f"trial {trial_id}: its checkpoint {checkpoint.path} is not whole ({problem}) and no other checkpoint "
            "of it is"
        )
    iteration = manifest_iteration(checkpoint.filesystem, path)
    print(
        f"trial {trial_id}: its checkpoint {checkpoint.path} is not whole ({problem}); restoring "
        f"{path} (iteration {iteration}) instead",
        file=sys.stderr,
        flush=True,
    )
    whole = type(checkpoint)(path=path, filesystem=checkpoint.filesystem)
    return _TrainingResult(checkpoint=whole, metrics={**result.metrics, "training_iteration": iteration})
