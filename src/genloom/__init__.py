"""genloom: raw data to a deployed, monitored, self-updating generative model from one YAML file."""

__version__ = "0.1.0"
