"""The dashboard (``genloom ui FILE``): server-rendered pages over runs, data, models and
monitoring, mounted on the same FastAPI app as ``genloom serve``."""
