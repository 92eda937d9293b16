"""Orbax checkpoints of the whole train state plus a small JSON record of the run's progress.

A checkpoint at step t holds ``state`` (any `TrainState` subclass: params, batch statistics,
optimizer state, PRNG key, step, and e.g. meta-parameters) and ``meta`` (JSON: epoch, position in
the epoch, per-epoch curves so far, wall time so far). The data position is the step (see
`gar_jax.data.device`), so restoring the state restores the batch sequence. Saves are
asynchronous (training continues while the files are written) and atomic (a run killed while
saving keeps the previous checkpoint); `close` waits for the last one.

Faults. `restore_readable` resumes from the newest checkpoint that reads: a newer one that does
not (bytes overwritten, files missing) is moved aside to ``<directory>_unreadable/<step>`` with a
one-line warning, and if none reads, `UnreadableCheckpoints` says which and what to do. A save
that the storage refuses (disk full, quota, read-only, I/O error: orbax reports these from its
writer threads, often as a ValueError carrying tensorstore's ``os_error_code``) raises
`StorageError` with one line; the half-written step is removed, the previous checkpoints are
untouched, and a rerun resumes from the newest of them.
"""
import contextlib
import errno
import os
import re
import shutil
import sys
import time
from typing import Optional

import jax
import orbax.checkpoint as ocp

from gar_jax.errors import ConfigError

# errno values that mean "the storage refused the write" (not a bug in the program).
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")
_TMP_SUFFIX = ".orbax-checkpoint-tmp"


class StorageError(OSError):
    """A write the storage refused (disk full, quota, read-only, I/O error); one-line message."""

    def __str__(self):
        return str(self.strerror)


class UnreadableCheckpoints(ConfigError):
    """No checkpoint of a workdir can be read."""


def storage_errno(error: BaseException) -> Optional[int]:
    """The errno of a storage failure anywhere in `error`'s chain (an OSError, or orbax's and
    tensorstore's ``... [os_error_code='28']`` messages), or None."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
            return error.errno
        match = _OS_ERROR_CODE.search(str(error))
        if match and int(match.group(1)) in STORAGE_ERRNOS:
            return int(match.group(1))
        error = error.__cause__ or error.__context__
    return None


def storage_message(code: int, what: str) -> str:
    """``no space left on device writing <what>; free space and rerun to resume``."""
    reason = "no space left on device" if code == errno.ENOSPC else os.strerror(code).lower()
    return f"{reason} writing {what}; free space and rerun the same command to resume"


def _remove_settled(paths, *, settle_s: float = 0.5, limit_s: float = 5.0) -> None:
    """Removes `paths` (directories of a refused save) and keeps removing them until none has
    reappeared for `settle_s` (at most `limit_s`): when one write of a save fails, orbax raises
    while tensorstore's other writes of that save may still be landing, and a write that lands
    after the first removal re-creates the directory."""
    deadline, quiet_since = time.monotonic() + limit_s, None
    while time.monotonic() < deadline:
        present = [p for p in paths if os.path.exists(p)]
        for path in present:
            shutil.rmtree(path, ignore_errors=True)
        now = time.monotonic()
        quiet_since = (quiet_since or now) if not present else None
        if quiet_since is not None and now - quiet_since >= settle_s:
            return
        time.sleep(0.05)


class Checkpointer:
    """Saves and restores ``(state, meta)`` under ``directory`` (keeps the newest `max_to_keep`)."""

    def __init__(self, directory: str, *, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                                 cleanup_tmp_directories=True))
        self._saving = None  # the step of the save in flight

    def latest_step(self) -> Optional[int]:
        """The step of the newest complete checkpoint, or None."""
        return self._manager.latest_step()

    def all_steps(self) -> list:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, meta: dict) -> None:
        """Starts saving `state` (pytree of global arrays) and `meta` (JSON-able) as `step`.
        Raises `StorageError` if this save or the previous (asynchronous) one was refused."""
        with self._storage_errors(step):
            self._manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self._saving = step

    def wait(self) -> None:
        """Waits for the save in flight (`StorageError` if it was refused)."""
        with self._storage_errors():
            self._manager.wait_until_finished()

    def restore(self, template, step: Optional[int] = None):
        """Returns ``(state, meta)`` of checkpoint `step` (default: the newest).

        `template` is a state of the same structure (e.g. the freshly initialized one); restored
        arrays get its shapes, dtypes and shardings.
        """
        step = self.latest_step() if step is None else step
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()))
        return restored["state"], restored["meta"]

    def restore_readable(self, template):
        """``(step, state, meta)`` of the newest checkpoint that reads, or None if there is none.

        Newer checkpoints that do not read are moved to ``<directory>_unreadable/`` (process 0,
        once every process has tried them) with a warning; `UnreadableCheckpoints` if no
        checkpoint reads.
        """
        steps = self.all_steps()
        failed = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(template, step)
            except Exception as e:  # noqa: BLE001 - any reader error means "does not read"
                failed.append((step, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))
                continue
            if failed:
                self._set_aside([s for s, _ in failed])
                print(f"gar_jax: warning: checkpoint step {', '.join(str(s) for s, _ in failed)} "
                      f"in {self.directory} does not read ({failed[0][1]}); moved to "
                      f"{self.directory}_unreadable, resuming from step {step}", file=sys.stderr)
            return step, state, meta
        if failed:
            raise UnreadableCheckpoints(
                f"no checkpoint in {self.directory} reads (step "
                f"{', '.join(str(s) for s, _ in failed)}: {failed[0][1]}); move that directory "
                "away to start the run over, or restore it from a backup")
        return None

    def _set_aside(self, steps) -> None:
        if jax.process_count() > 1:  # every process has read (or failed to read) them first
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gar_jax checkpoint set aside")
        if jax.process_index() == 0:
            aside = f"{self.directory}_unreadable"
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                target = os.path.join(aside, str(step))
                if os.path.exists(target):
                    shutil.rmtree(target)
                os.replace(os.path.join(self.directory, str(step)), target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gar_jax checkpoint set aside done")
        self._manager.reload()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        try:
            self.wait()
        finally:
            try:
                self._manager.close()
            except Exception as e:  # noqa: BLE001 - the refused save, reported by wait already
                if storage_errno(e) is None:
                    raise

    @contextlib.contextmanager
    def _storage_errors(self, step: Optional[int] = None):
        """Turns a refused write (of the save in flight or of `step`) into `StorageError`."""
        try:
            yield
        except Exception as error:  # noqa: BLE001 - re-raised unless a storage failure
            code = storage_errno(error)
            if code is None:
                raise
            candidates = [s for s in (self._saving, step) if s is not None]
            self._saving = None
            tmp = {s: os.path.join(self.directory, f"{s}{_TMP_SUFFIX}") for s in candidates}
            failed = [s for s in candidates if os.path.exists(tmp[s])] or candidates[-1:]
            if jax.process_index() == 0:  # free what the refused save took
                _remove_settled(list(tmp.values()))
            kept = [s for s in self.all_steps() if s not in failed]
            what = (f"checkpoint step {', '.join(map(str, failed))} in {self.directory}"
                    + (f" (step {kept[-1]} is intact)" if kept else ""))
            raise StorageError(code, storage_message(code, what)) from None
