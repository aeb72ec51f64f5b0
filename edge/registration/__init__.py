"""Patient registration: paired-point, surface ICP, quality metrics, the tracking state machine."""
