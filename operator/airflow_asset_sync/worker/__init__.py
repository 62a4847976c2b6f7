"""The worker: poll a source, publish to a transport, replay into every target."""
