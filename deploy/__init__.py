"""earshot deploy: the robustness release gate and the operator kit."""
