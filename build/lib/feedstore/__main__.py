"""`python -m feedstore ...` is the `feedstore` command."""

from feedstore.shell.cli import main

if __name__ == "__main__":
    main()
