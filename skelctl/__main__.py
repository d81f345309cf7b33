from skelctl.cli import main

main(prog_name="skelctl")
