"""How a worker is put together: the backend ports activities call, the factory that builds
them from settings, logging and the TLS context."""
