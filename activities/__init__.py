"""Domain work as pure functions, each with a thin @activity.defn wrapper."""
