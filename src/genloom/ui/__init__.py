"""genloom.ui: the web dashboard (`genloom ui FILE`)."""
