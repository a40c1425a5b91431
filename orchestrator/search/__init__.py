"""The search: a space's YAML, the study loop, one study's Tuner, the trial driver, selection and summaries."""
