"""Pipeline stages: each binds params and paths to the library and writes its declared outputs.

Nothing outside this package knows the project's file layout. Every stage is a ``skelctl``
subcommand and a DVC stage of the same name.
"""
