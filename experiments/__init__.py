"""Experiments on zofo: the study harness, its report and its results (the package never imports this)."""
