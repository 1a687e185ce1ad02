"""Built-in action plugins; each module exposes ``build(deps) -> ActionPlugin | None``."""
