"""The one learned-policy recorder (gar_jax/report.py): the files it writes, by hand."""
import json
import os

import numpy as np

from gar_jax import report


class State:
    def __init__(self, w):
        self.policy = {"w": np.asarray(w, np.float32)}


def make_recorder(plotted):
    def plot(history, workdir):
        plotted.append([dict(r) for r in history])

    return report.PolicyRecorder(
        policy_of=lambda state: state.policy,
        record=lambda policy: {"w": policy["w"].tolist()},
        policy_json=lambda policy, epoch: {"epoch": epoch, "w": policy["w"].tolist()},
        plot=plot,
        results=lambda policy, record: {"learned_policy": {"sum": float(policy["w"].sum())},
                                        "last": record})


def lines(workdir):
    with open(os.path.join(workdir, report.HISTORY_FILE)) as f:
        return [json.loads(line) for line in f]


def test_history_policy_and_results_are_the_policies_at_the_recorded_epochs(tmp_path):
    workdir = str(tmp_path)
    plotted = []
    rec = make_recorder(plotted)
    ws = {1: [0.5, -1.0], 2: [0.25, 2.0], 3: [4.0, 0.125]}
    for epoch, w in ws.items():
        out = rec(workdir, State(w), epoch, {"accuracy": 0.1 * epoch})
    expected = [{"epoch": e, "test_accuracy": 0.1 * e, "w": w} for e, w in ws.items()]
    assert lines(workdir) == expected
    assert report.read_history(workdir) == expected
    assert plotted[-1] == expected and len(plotted) == 3  # every figure sees the whole history
    with open(os.path.join(workdir, report.POLICY_FILE)) as f:
        assert json.load(f) == {"epoch": 3, "w": [4.0, 0.125]}
    assert out == {"learned_policy": {"sum": 4.125}, "last": expected[-1]}
    # No temporary file left behind.
    assert sorted(os.listdir(workdir)) == sorted([report.HISTORY_FILE, report.POLICY_FILE])


def test_resume_replaces_the_redone_epoch_without_duplicates(tmp_path):
    workdir = str(tmp_path)
    rec = make_recorder([])
    for epoch in (1, 2, 3):
        rec(workdir, State([epoch, 0.0]), epoch, {"accuracy": 0.5})
    # A run killed after epoch 3's report but checkpointed at epoch 1 redoes epochs 2 and 3 (a
    # new recorder, as after a restart): the records of the redone epochs are replaced.
    resumed = make_recorder([])
    resumed(workdir, State([20.0, 1.0]), 2, {"accuracy": 0.75})
    assert lines(workdir) == [{"epoch": 1, "test_accuracy": 0.5, "w": [1.0, 0.0]},
                              {"epoch": 2, "test_accuracy": 0.75, "w": [20.0, 1.0]}]
    resumed(workdir, State([30.0, 1.0]), 3, {"accuracy": 0.875})
    assert [r["epoch"] for r in lines(workdir)] == [1, 2, 3]
    assert lines(workdir)[2]["w"] == [30.0, 1.0]


def test_text_policy_is_written_as_given_and_old_duplicate_lines_are_read_newest_first(tmp_path):
    workdir = str(tmp_path)
    # A history written by an older version (appended: epoch 2 twice, the later line newest).
    with open(os.path.join(workdir, report.HISTORY_FILE), "w") as f:
        for epoch, w in ((1, 1.0), (2, 2.0), (2, 3.0)):
            f.write(json.dumps({"epoch": epoch, "w": w}) + "\n")
    assert report.read_history(workdir) == [{"epoch": 1, "w": 1.0}, {"epoch": 2, "w": 3.0}]
    assert report.read_history(workdir, before=2) == [{"epoch": 1, "w": 1.0}]
    rec = report.PolicyRecorder(policy_of=lambda s: s.policy, record=lambda p: {},
                                policy_json=lambda p, e: '{"compact":1}', plot=lambda h, w: None,
                                results=lambda p, r: {})
    rec(workdir, State([0.0]), 3, {"accuracy": 0.0})
    with open(os.path.join(workdir, report.POLICY_FILE)) as f:
        assert f.read() == '{"compact":1}'
    assert [r["epoch"] for r in lines(workdir)] == [1, 2, 3]
