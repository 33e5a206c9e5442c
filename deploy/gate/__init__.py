"""The robustness release gate: adversarial attacks and natural corruptions judged against a TOML policy."""
