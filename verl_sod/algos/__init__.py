"""Algorithm pieces: SOD step weights, trajectory patterns, the registered SOD loss."""
