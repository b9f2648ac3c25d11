"""Behaviour analysis of event logs and its report (JSON, PNG figures, HTML)."""

from equilibra.analysis.behaviour import analyse

__all__ = ["analyse"]
