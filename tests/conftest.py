"""Test set-up: 8 simulated CPU devices (must be set before JAX is imported)."""
import os

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
# 8 simulated devices share 2 cores: under load a device thread can reach a collective tens of
# seconds after the others, and XLA:CPU aborts the whole process (SIGABRT, "Termination timeout
# ... Exiting to ensure a consistent program state") after its default 40 s. Slow is not stuck
# here: wait up to 30 minutes (CI failed this way once, exit 134 in test_smart_aug).
for _flag, _seconds in (("xla_cpu_collective_call_terminate_timeout_seconds", 1800),
                        ("xla_cpu_collective_timeout_seconds", 1800),
                        ("xla_cpu_collective_call_warn_stuck_timeout_seconds", 300)):
    if _flag not in os.environ["XLA_FLAGS"]:
        os.environ["XLA_FLAGS"] += f" --{_flag}={_seconds}"
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402

assert jax.device_count() >= 8, (
    "tests expect at least 8 (simulated CPU) devices; XLA_FLAGS=" + os.environ.get("XLA_FLAGS", ""))
