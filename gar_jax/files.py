"""The package's one atomic file writer: a killed run never leaves a half-written file.

`write_text` / `write_json` write to a temporary file beside the target and rename it over the
target (atomic on POSIX file systems). Every results.json, policy.json, history and report file
of the package goes through them (`gar_jax.train.engine` re-exports both).
"""
import json
import os


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` atomically."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def write_json(path: str, obj) -> None:
    """Writes `obj` as JSON (indent 1) atomically."""
    write_text(path, json.dumps(obj, indent=1))
