"""Models: WRN-d-k (`wrn`), the toy split nets FC / FCBN / CNNBN (`toy`)."""


def variables(params, batch_stats) -> dict:
    """Flax variables from params and BatchNorm statistics (``{}`` for models without BN)."""
    return {"params": params, "batch_stats": batch_stats} if batch_stats else {"params": params}
