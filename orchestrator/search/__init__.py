"""The search: a space's YAML, the shipped spaces by name, the study loop, one study's Tuner and its progress line,
the trial driver, selection and summaries."""
