"""Built-in sinks, one module per destination; each is registered under the `evalkeeper.sinks` entry points."""
