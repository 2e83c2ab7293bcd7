"""``python -m recurrent_jax``: runs the adding-problem demo until the CLI lands."""

from recurrent_jax.demo import main

if __name__ == "__main__":
    main()
