"""What a learner learned, written to its workdir: the one policy recorder of every method that
learns an augmentation policy (OLA, smart_aug, DRA's search).

A method hands the engine ``report=PolicyRecorder(...)``; after every evaluation the recorder

- adds ``{"epoch", "test_accuracy", **record(policy)}`` to ``policy_history.jsonl``: the file is
  rewritten (atomically) as the records of the earlier epochs plus this one, so a resumed run that
  redoes an epoch replaces that epoch's record and the file never holds an epoch twice;
- rewrites ``policy.json`` (atomically): the replayable policy, ``policy_json(policy, epoch)``;
- redraws the method's figures from the whole history (``plot(history, workdir)``, functions of
  `gar_jax.plots`);
- returns the method's entries of ``results.json`` (``results(policy, record)``; by convention
  ``learned_policy`` with ``op_probability``, ``destructive_op`` and ``policy_file``).

``policy`` is ``jax.device_get(policy_of(state))``, taken once per evaluation.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax

from gar_jax.train import engine

HISTORY_FILE = "policy_history.jsonl"
POLICY_FILE = "policy.json"


def read_history(workdir: str, before: float = float("inf")) -> list:
    """The records of ``workdir/policy_history.jsonl`` with epoch < `before`, by epoch (one per
    epoch: where a file written by an older version holds an epoch twice, the later line wins)."""
    path = os.path.join(workdir, HISTORY_FILE)
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        by_epoch = {r["epoch"]: r for r in map(json.loads, f)}
    return [by_epoch[e] for e in sorted(by_epoch) if e < before]


@dataclasses.dataclass(frozen=True)
class PolicyRecorder:
    """The engine ``report`` ``(workdir, state, epoch, evaluation) -> dict`` of a policy learner
    (module docstring).

    Args:
      policy_of: ``state -> policy`` (a pytree on the devices).
      record: ``policy -> dict`` of JSON values: the policy's numbers kept per epoch.
      policy_json: ``(policy, epoch) -> str | dict``: the content of policy.json (a dict is
        written with `engine.write_json`).
      plot: ``(history, workdir) -> None``: writes the figures (history: the records so far).
      results: ``(policy, record) -> dict``: the method's entries of results.json.
    """
    policy_of: Callable[[Any], Any]
    record: Callable[[Any], dict]
    policy_json: Callable[[Any, int], Any]
    plot: Callable[[list, str], None]
    results: Callable[[Any, dict], dict]

    def __call__(self, workdir: str, state, epoch: int, evaluation: dict) -> dict:
        policy = jax.device_get(self.policy_of(state))
        record = {"epoch": epoch, "test_accuracy": evaluation["accuracy"], **self.record(policy)}
        history = read_history(workdir, before=epoch) + [record]
        engine.write_text(os.path.join(workdir, HISTORY_FILE),
                          "".join(json.dumps(r) + "\n" for r in history))
        content = self.policy_json(policy, epoch)
        path = os.path.join(workdir, POLICY_FILE)
        if isinstance(content, str):
            engine.write_text(path, content)
        else:
            engine.write_json(path, content)
        self.plot(history, workdir)
        return self.results(policy, record)
