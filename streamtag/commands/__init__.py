"""The command line's terminal code, one module per command; the parser is streamtag.cli."""
