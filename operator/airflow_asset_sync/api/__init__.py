"""What every layer shares: the custom resource, events, status, and the pure rules all of
them apply (the back-off formula, how a validation error is worded). No I/O here."""
