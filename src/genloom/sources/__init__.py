"""Sources: one file per component, registered in SOURCES (file name = YAML type)."""
