"""The data shapes every layer shares: the custom resource, events, status. No I/O here."""
