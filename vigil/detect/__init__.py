"""Detection: rules as data (rules.yaml), a vectorised engine over the lake's frames."""
