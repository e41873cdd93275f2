"""The report of a study's runs: tables, selection on dev, speed-ups and plots (`aggregate`)."""
