"""The skelctl process: ``python -m skelctl`` (DVC's stages) and the ``skelctl`` console script
(setup.cfg's entry point, :func:`main`). Around the click group of skelctl.cli: SIGINT and SIGTERM
handled from the first line on (skelctl.interrupts), warnings one line each."""

from skelctl import interrupts

interrupts.install()  # before any other import: a signal at any moment ends the same way


def main() -> None:
    """Run the command line; SIGINT or SIGTERM at any moment ends it with one line on stderr and
    exit status 130 or 143, after the work has unwound (partial files removed, locks released)."""
    import sys
    import warnings

    warnings.showwarning = one_line_warning
    try:
        from skelctl.cli import main as command_line

        command_line.main(prog_name="skelctl")  # ends with SystemExit
    except interrupts.Interrupted as err:
        from skelctl.cli import interrupted_line

        interrupts.ignore()
        print(interrupted_line(err.signum, sys.argv[1:]), file=sys.stderr, flush=True)
        sys.exit(128 + err.signum)
    finally:
        interrupts.ignore()  # the outcome is decided: a late signal changes nothing


def one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """``warning: MESSAGE``, without the source line Python shows."""
    import sys

    print(f"warning: {message}", file=file or sys.stderr)


if __name__ == "__main__":
    main()
