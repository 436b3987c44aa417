"""Base models: where they come from (resolve_base_model) and which weights train (methods)."""
