"""Bad input, drawn systematically (hypothesis): overrides of every config field of every
experiment kind with wrong types, NaN / inf, negative, zero and huge numbers, empty and odd
strings, and unknown field names, through the real command line in this process (absl's parse
with the CLI's parser, then `gar_jax.main.main`: flag parsing -> config checks -> the method's
validate -> workdir). Each draw must end one of two ways, and nothing else (no exception, no
traceback):

- refused: exit status 2, exactly one line ``gar_jax: error: ...`` on stderr, the method's
  ``run`` (where compute starts) never called, no workdir made;
- accepted: the method's ``run`` called once (replaced here by a counter: accepted draws are not
  trained; that the engine trains what validate accepts is tested elsewhere).

Draws that no field can take (NaN / inf, an unknown field, a non-number where a number goes)
must be refused. The experiment kinds are found from configs/*.py (one config per
``config.experiment`` value, a digits one where there is one), so a new kind is covered when it
has a config; every method module must have one.
"""
import glob
import os
import sys
import tempfile

import pytest
from absl import flags
from hypothesis import HealthCheck, given, settings, strategies as st

import config_files
from gar_jax import main as cli_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = 300
STATS = {"examples": 0, "refused": 0, "accepted": 0}


def _kinds() -> dict:
    """experiment kind -> (config path, {dotted field: value})."""
    paths = sorted(glob.glob(os.path.join(REPO, "configs", "*.py")),
                   key=lambda p: ("digits" not in os.path.basename(p), p))
    kinds = {}
    for path in paths:
        config = config_files.load_path(path)
        kind = config.get("experiment", None)
        if kind not in kinds:
            kinds[kind] = (path, cli_main.config_fields(config))
    return kinds


KINDS = _kinds()
NAN_INF = ["nan", "inf", "-inf", "NaN", "+inf", "1e999"]
NUMBERS = ["0", "0.0", "-1", "-0.5", "-1e9", "1e30", "99999999999", str(2 ** 63), "1e-30",
           "1.5", "3"]
STRINGS = ["abc", "", "None", "True", "[1, 2]", "(1,)", "{}", "-", "1,2", "'x'", "☃"]


def test_every_experiment_kind_has_a_config():
    assert set(KINDS) == set(cli_main.experiments()), (sorted(KINDS), cli_main.experiments())


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@st.composite
def bad_overrides(draw):
    """(kind, [(field, value, must_refuse)])."""
    kind = draw(st.sampled_from(sorted(KINDS)))
    _, fields = KINDS[kind]
    overrides = []
    # Mostly one override (a second one may hide what the first does), numbers twice as often.
    for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        how = draw(st.sampled_from(["nan_inf", "number", "number", "string", "unknown"]))
        if how == "unknown":
            known = draw(st.sampled_from(sorted(fields)))
            prefix = known.rpartition(".")[0]
            name = draw(st.sampled_from(["nosuch", "learning_rat", "model.nosuch", "x.y"]))
            field = f"{prefix}.{name}" if prefix and draw(st.booleans()) else name
            overrides.append((field, draw(st.sampled_from(NUMBERS + STRINGS)), True))
            continue
        field = draw(st.sampled_from(sorted(fields)))
        current = fields[field]
        value = draw(st.sampled_from({"nan_inf": NAN_INF, "number": NUMBERS,
                                      "string": STRINGS}[how]))
        must_refuse = (how == "nan_inf" and not isinstance(current, str)) or (
            how == "string" and _is_number(current) and value not in ("True",))
        overrides.append((field, value, must_refuse))
    return kind, overrides


def _run_cli(argv, capsys):
    """``python -m gar_jax.main *argv`` in this process; (exit status, stderr)."""
    argv = ["gar_jax.main", *argv]
    old_argv, sys.argv = sys.argv, argv  # config_flags reads the overrides from sys.argv
    try:
        for name in [n for n in flags.FLAGS if n.startswith("config.")]:
            delattr(flags.FLAGS, name)  # the previous run's --config.<field> override flags
        flags.FLAGS.unparse_flags()
        capsys.readouterr()
        code = 0
        try:
            cli_main.main(cli_main._parse_flags(argv))
        except SystemExit as e:
            code = e.code
        return code, capsys.readouterr().err
    finally:
        sys.argv = old_argv


@pytest.fixture(scope="module")
def counted_runs():
    """Every method's `run` replaced by a call counter (restored afterwards)."""
    calls = []
    modules = [cli_main.get_runner({"experiment": kind}) for kind in KINDS]
    saved = [m.run for m in modules]
    for m in modules:
        m.run = lambda config, workdir: calls.append(workdir)
    yield calls
    for m, run in zip(modules, saved):
        m.run = run


@settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drawn=bad_overrides())
def test_bad_overrides_train_or_exit_2_in_one_line(counted_runs, capsys, drawn):
    kind, overrides = drawn
    path, _ = KINDS[kind]
    workdir = os.path.join(tempfile.mkdtemp(prefix="gar_jax_bad_input_"), "run")
    args = [f"--config={path}", *(f"--config.{f}={v}" for f, v, _ in overrides),
            f"--workdir={workdir}"]
    before = len(counted_runs)
    code, err = _run_cli(args, capsys)  # an exception here is a traceback for the user: fails
    STATS["examples"] += 1
    assert "Traceback" not in err, err
    if code == 2:
        STATS["refused"] += 1
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gar_jax: error: "), (args, err)
        assert len(counted_runs) == before, args  # before any compute
        assert not os.path.exists(workdir), args
    else:
        STATS["accepted"] += 1
        assert code in (0, None), (args, code, err)
        assert len(counted_runs) == before + 1, (args, err)
        assert not any(refuse for _, _, refuse in overrides), (
            f"accepted {args}, which no field can take")
        assert "error" not in err, err


def test_bad_input_report():
    """Runs after the property test (file order): how many draws, refused / accepted."""
    print(f"\nbad-input draws: {STATS}")
    if STATS["examples"]:  # (0 when this test runs alone)
        assert STATS["examples"] == EXAMPLES
        assert STATS["refused"] >= EXAMPLES // 2, STATS
