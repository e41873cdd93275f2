"""The `zofo` command: argv -> config -> `zofo.api`. Nothing in the package imports it."""
