from darkraw.cli import run

run()
