"""Test set-up: 8 simulated CPU devices (must be set before JAX is imported)."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
# XLA:CPU runs the devices' programs on a pool of max(cores, devices) threads (8 here): with
# several collective programs in flight (async dispatch), threads blocked in one program's
# all-reduce can hold every thread another program's all-reduce needs -> deadlock, which XLA
# turns into SIGABRT after 40 s ("Termination timeout ..."; CI failed so, exit 134, in
# test_smart_aug). Reproduced outside the tests with 4 jitted psum programs in flight: abort
# with 8 threads, done with PJRT_NPROC=32 (also with 12 programs in flight). PJRT_NPROC sets the
# pool size (XLA's DefaultThreadPoolSize); it must be set before JAX creates its CPU client.
os.environ.setdefault("PJRT_NPROC", "32")
# Slow is not stuck: under load a starved device thread reached an all-reduce 20+ s after the
# others (measured); allow 5 minutes before XLA aborts instead of its default 40 s.
for _flag, _seconds in (("xla_cpu_collective_call_terminate_timeout_seconds", 300),
                        ("xla_cpu_collective_call_warn_stuck_timeout_seconds", 120)):
    if _flag not in os.environ["XLA_FLAGS"]:
        os.environ["XLA_FLAGS"] += f" --{_flag}={_seconds}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# The suite's time is mostly XLA compiling many small programs once each, not running them.
# - JAX_DISABLE_MOST_OPTIMIZATIONS: XLA's backend at optimization level 0, which compiles
#   20-30% faster (measured: test_every_kind.py::test_dra 91 -> 75 s, the subset-reward tests
#   32 -> 23 s), while tests that mostly execute run slower (the OLA kill/resume test 49 ->
#   62 s): the whole suite about 7% faster. Numerics are those of unfused ops, within every
#   tolerance here. Set it to 0 to test the optimized programs.
# - A persistent compilation cache for the session (one directory, made by the first process and
#   inherited by pytest-xdist's workers and by the subprocesses the tests start): a program
#   compiled again (a killed run's rerun, the same tiny model in several tests) is read back.
#   Programs that compile in under a second are not written (JAX's default threshold).
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
_OWN_CACHE = None  # the cache this process made (xdist's workers inherit it, so make none)
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    import tempfile

    _OWN_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(
        prefix="gar_jax_tests_xla_cache_")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

assert jax.device_count() >= 8, (
    "tests expect at least 8 (simulated CPU) devices; XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""))


def pytest_sessionfinish(session, exitstatus):
    """The session's compilation cache goes with the process that made it."""
    if _OWN_CACHE:
        import shutil

        shutil.rmtree(_OWN_CACHE, ignore_errors=True)
