"""What the worker and the CLI share to talk to Temporal: the connection, the data converter
with its payload codec, and the workflow sandbox runner. Neither side imports the other."""
