"""The `edgebuild` command line (main.py holds the group; each module beside it a set of commands)."""
