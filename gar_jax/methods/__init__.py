"""Methods that plug into the training engine (`gar_jax.train.engine`), one module each.

``config.experiment = "<name>"`` runs ``gar_jax.methods.<name>``: a module with
``validate(config)`` (one-line `ConfigError` on bad input, before any compute) and
``run(config, workdir) -> dict`` (builds its state and steps, hands them to the engine).
"""
