"""Helpers for the kontalkd integration tests and the development node.

mariadb.py runs a private MariaDB server on a unix socket; node.py writes
kontalkd configurations and runs kontalkd/kontalkctl.  Both also work as
command-line tools, used by scripts/kontalk-dev.
"""
