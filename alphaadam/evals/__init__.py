"""Evaluation: GLUE metrics computed locally (scikit-learn, scipy)."""
