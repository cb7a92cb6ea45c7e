"""``python -m agility_mlflow`` is the ``agility`` command."""

from agility_mlflow.cli import main

if __name__ == "__main__":
    main(prog_name="agility")
